"""mitm-ambassador: an ambassador (an out-of-process proxy beside an application) built as a
suite of mitmproxy addons. Installed, this package is `mitm_ambassador`; mitmproxy's tools load
it through the script `ambassador.py` beside this file."""
