"""Models at work: the service layer, the HTTP API (REST, SSE, GraphQL) and the batchers."""
