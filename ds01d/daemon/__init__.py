"""The running daemon: the main loop (`loop`), the only writer of ds01d's state, and
what it drives: the GPU sampling pass (`gpu_watch`), the allocation service and its
wait queue (`allocation_service`), the admin actions asked for over the socket
(`admin_actions`), config reload (`reload`), and the status socket (`status_model`
builds the document, `status_server` serves it).

May import: `ds01d.host`, `ds01d.rules`, `ds01d.config`.  Never the CLI.
"""
