"""The authenticated HTTP surface: the site console API (`/api/v1/sites/...`), its OpenAPI
document, and the web console at `/console/`. Handlers are module-level functions reading the
worker's `Runtime` from `request.app.ctx.runtime`, as gateway/handlers.py does for `/api/event`;
routes are attached in gateway/app.py.
"""
