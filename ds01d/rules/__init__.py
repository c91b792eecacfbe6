"""Pure decisions: who owns a container, what it asked for, which limits apply, when
it is warned or stopped, which device it gets.

Everything here is a function (or immutable data) over plain values: no I/O, no
threads, no clock of its own (the caller passes `now`).  That is what lets the tests
walk every rule exhaustively and what keeps a decision the same whether the daemon,
the gateway or a CLI asks for it.

May import: `ds01d.config` and other `ds01d.rules` modules.  Nothing above.
"""
