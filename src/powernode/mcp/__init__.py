"""The MCP server: the operator actions for assistants (``powernode mcp serve``)."""
