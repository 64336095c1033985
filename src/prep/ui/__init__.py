"""`prep ui`: the chain in a browser (Data, Template, Recipe, Run, Runs), a local web app over ROOT.

The layer above the recipes and beside the CLI (design §9): it runs prep's verbs and `prep run`, and nothing
below imports it. It needs the `ui` extra (`pip install 'prep[ui]'`: Starlette and uvicorn); `prep ui` imports it
only when it starts."""
