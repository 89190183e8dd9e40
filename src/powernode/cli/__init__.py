"""Command lines: the only code that prints or exits. Each command calls one service function."""
