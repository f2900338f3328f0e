"""HTTP optimizer service: inferno's REST API (stateless and stateful, wire-compatible) and a native one.

``inferno_mip.service.app.create_app(ServiceSettings(...))`` builds the FastAPI app (settings in
``inferno_mip.service.context``); ``inferno-mip serve-optimizer`` runs it. Nothing heavy is imported here.
"""
