"""The `gridflex` command line (typer): demo, simulate, serve, grid, audit, schema."""
