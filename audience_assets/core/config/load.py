"""Loading the configuration: YAML files to validated models, with errors that name the file, the entry and
the field, so nothing half-configured ever reaches a run."""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from audience_assets.core.config.audiences import Audience, AudiencesConfig
from audience_assets.core.config.base import ConfigError
from audience_assets.core.config.contracts import SourcesConfig
from audience_assets.core.config.project import ProjectConfig
from audience_assets.core.config.tenants import TenantsConfig

PACKAGE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"  # the shipped partners.yaml and audiences.yaml


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key that a mapping repeats: PyYAML keeps the last silently, so a pasted
    second audience entry would replace the first without a word."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, str | int | float | bool) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {seen[key] + 1}, again on line "
                    f"{key_node.start_mark.line + 1}): a later entry would silently replace the earlier one; keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _load_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: file not found (set AUDIENCE_CONFIG_DIR to the folder holding it)")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def _explain(path: Path, error: ValidationError, prefix: str = "") -> ConfigError:
    lines = []
    for issue in error.errors():
        where = ".".join([prefix] * bool(prefix) + [str(part) for part in issue["loc"]])
        lines.append(f"  {where}: {issue['msg']}")
    return ConfigError(f"{path}: invalid configuration\n" + "\n".join(lines))


def load_config(config_dir: Path | str | None = None) -> ProjectConfig:
    """Load and validate `partners.yaml` and `audiences.yaml` from `config_dir` (default: the package's)."""
    folder = Path(config_dir) if config_dir else PACKAGE_CONFIG_DIR
    partners_path, audiences_path = folder / "partners.yaml", folder / "audiences.yaml"
    tenants_path = folder / "tenants.yaml"
    tenants = None
    if tenants_path.is_file():  # optional: without it, one implicit tenant (the META_* variables)
        try:
            tenants = TenantsConfig(**_load_yaml(tenants_path)).tenants
        except ValidationError as error:
            raise _explain(tenants_path, error) from None
        if not tenants:
            raise ConfigError(f"{tenants_path}: declare at least one tenant under 'tenants:' (or remove the file)")
    try:
        sources = SourcesConfig(**_load_yaml(partners_path))
    except ValidationError as error:
        raise _explain(partners_path, error) from None
    try:
        declared = AudiencesConfig(**_load_yaml(audiences_path))
    except ValidationError as error:
        raise _explain(audiences_path, error) from None
    if not declared.audiences:
        raise ConfigError(f"{audiences_path}: declare at least one audience under 'audiences:'")
    audiences = {}
    for name, spec in declared.audiences.items():
        spec = spec or {}
        tenant = (tenants or {}).get(spec.get("tenant"))
        try:  # defaults, then the tenant's defaults, then the audience's own settings
            audiences[name] = Audience(
                **{**declared.defaults.model_dump(), **(tenant.defaults if tenant else {}), **spec}
            )
        except ValidationError as error:
            raise _explain(audiences_path, error, prefix=f"audiences.{name}") from None
    return ProjectConfig(sources, audiences, tenants)
