"""The Jupyter server side: the extension app, its REST handlers and OpenAPI document."""
