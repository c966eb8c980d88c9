"""The FastAPI service over one workspace (DESIGN.md section 8): ``main.create_app`` builds it."""
