"""The clean room: the match of first-party and partner data, where only what an analysis allows leaves.

`tables` (the tables' columns), `templates` (the analyses as SQL, rendered per partner), `rules` and
`admission/` (analysis rules, enforced), `collaboration` (who owns which table under which rule),
`protected_query` (a query run to the end on AWS or the local engine) and `match` (a partner's match).
"""
