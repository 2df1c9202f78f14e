"""The browser playground: one static page (app/static/playground.html) that calls the API from the same origin."""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, redirect, send_file

PAGE = Path(__file__).resolve().parent.parent / "static" / "playground.html"

blp = Blueprint("playground", __name__)


@blp.route("/playground", methods=["GET"])
def playground():
    return send_file(PAGE, mimetype="text/html", max_age=0)


@blp.route("/", methods=["GET"])
def home():
    return redirect("playground", code=302)
