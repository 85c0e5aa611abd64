"""The web app (`stylegan-app`): translate photos with trained generators and stylise them with the Gatys
method in a browser. Gradio comes from the optional `[app]` extra and is imported only by the page (`app.ui`)
and its handlers (`app.handlers`), so this package, `app.core`, `app.stylise` and `app.cli` load without it;
`app.limits` holds the default bounds."""
