"""HTTP optimizer service: inferno's REST API and a native one."""
