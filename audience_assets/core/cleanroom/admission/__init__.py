"""Admission of a protected query: check the SQL against the rule of every table it reads, then rewrite it
for DuckDB with the rules' output controls built in.

The checks follow reference/cleanrooms.md §1 and §5: LIST and AGGREGATION queries must fit their
grammars (one SELECT, INNER JOINs on join columns, the query runner's table joined in); CUSTOM queries
must be an allowed analysis template (or `ANY_QUERY` for an allowed provider) and never output a
disallowed column. Output constraints and aggregation thresholds become hidden `COUNT(DISTINCT ...)`
columns that drop small rows silently, as the service does. Where the service's behaviour is not
documented, this engine refuses rather than guesses: a query it cannot prove compliant is rejected.
"""

from audience_assets.core.cleanroom.admission.common import Parameter, QueryRejected
from audience_assets.core.cleanroom.admission.query import admit

__all__ = ["Parameter", "QueryRejected", "admit"]
