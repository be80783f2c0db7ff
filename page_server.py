"""The operator page's server: `streamlit run page_server.py` (what workers/app.py runs). It
serves app.py as `streamlit run app.py` would, behind lib.page.auth.MediaGate: with `[app]
password` set, a download (/media/...) needs the cookie of a browser that logged in."""

import streamlit as st
from starlette.middleware import Middleware

from lib.config import load_config
from lib.page.auth import MediaGate

app = st.App("app.py", middleware=[Middleware(MediaGate, password=load_config().app.password)])
