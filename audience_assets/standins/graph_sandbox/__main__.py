"""`python -m audience_assets.standins.graph_sandbox`: the sandbox on a loopback port (see `main`)."""

from audience_assets.standins.graph_sandbox import main

main()
