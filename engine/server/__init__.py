"""`engine serve`: the router as an OpenAI-compatible HTTP service (starlette on uvicorn).

The outer ring, like the CLI: it holds no routing logic, only the wire format, auth, hot
reload and ops pages around `engine.runtime.router.Router`.
"""
