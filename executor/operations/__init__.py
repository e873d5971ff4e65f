"""The operators' commands (``orderstream ...``): status and order views, the kill switch
and trading states, replay and audit, snapshots, and the risk commands."""
