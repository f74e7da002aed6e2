from he_agg.cli import app

app()
