"""What people type: the `ds01d` command and its subcommands (`main`), `ds01-gpu-status`
(`gpu_status`, drawn by `status_render`), `ds01 run` (`ds01_run`), `ds01d doctor`
(`doctor`), the `ds01d limits` report (`limits_report`), the client of the status
socket (`status_client`), and the notifiers an admin can give as `policies.notify_command`:
`ds01d-notify-mail` (`notify_mail`) and `ds01d-notify-webhook` (`notify_webhook`), whose
text is made by `notice`.

Clients talk to the running daemon over its socket, never to its database; `ds01d run`
is the one command that starts the daemon itself.

May import anything below it: `ds01d.daemon`, `ds01d.host`, `ds01d.rules`,
`ds01d.config`.
"""
