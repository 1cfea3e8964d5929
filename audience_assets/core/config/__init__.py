"""Data contracts (`partners.yaml`), audience declarations (`audiences.yaml`) and tenants (`tenants.yaml`),
validated on load: a mistake fails at load time with a message that names the file, the entry and the field.

`base` (strict models, names), `contracts`, `audiences`, `tenants`, `project` (the cross-checks) and `load`.
"""

from audience_assets.core.config.audiences import PRIVACY_FLOOR, Audience, AudienceDefaults
from audience_assets.core.config.base import NAME_PATTERN, ConfigError
from audience_assets.core.config.contracts import (
    CleanRoomTable,
    DeliveryGuards,
    FileContract,
    FirstPartyContract,
    PartnerCleanRoom,
    PartnerContract,
    SourcesConfig,
)
from audience_assets.core.config.load import PACKAGE_CONFIG_DIR, load_config
from audience_assets.core.config.project import ProjectConfig
from audience_assets.core.config.tenants import IMPLICIT_TENANT, SHARED_TENANT, Tenant

__all__ = [
    "IMPLICIT_TENANT",
    "NAME_PATTERN",
    "PACKAGE_CONFIG_DIR",
    "PRIVACY_FLOOR",
    "SHARED_TENANT",
    "Audience",
    "AudienceDefaults",
    "CleanRoomTable",
    "ConfigError",
    "DeliveryGuards",
    "FileContract",
    "FirstPartyContract",
    "PartnerCleanRoom",
    "PartnerContract",
    "ProjectConfig",
    "SourcesConfig",
    "Tenant",
    "load_config",
]
