"""Flask application factory for the Higgs Audio server."""

from __future__ import annotations

import logging
import re
import time
import uuid

from flask import Flask, g, request
from flask_cors import CORS
from flask_smorest import Api

from . import auth, docs_ui, errors, logging_setup, metrics
from .runtime import Runtime
from .settings import Settings

log = logging.getLogger("higgs.http")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


def create_app(config: dict | None = None, runtime: Runtime | None = None) -> Flask:
    """config: setting overrides (see Settings); runtime: a prepared Runtime (tests inject a loaded pool)."""
    settings = runtime.settings if runtime else Settings.from_env(overrides=config)
    logging_setup.configure(settings.log_file, settings.log_level)
    if runtime is None:
        _warn_unknown_variables()

    app = Flask(__name__)
    app.config.update(
        API_TITLE="Higgs Audio Server",
        API_VERSION="1.0",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        **docs_ui.CONFIG,  # /docs: Swagger UI from this server's own copy (works offline)
        MAX_CONTENT_LENGTH=settings.max_upload_bytes + 1024 * 1024,  # the clip plus its form fields
        MAX_FORM_PARTS=settings.max_form_parts,
    )
    CORS(app, origins=[o.strip() for o in settings.cors_origins.split(",")],
         expose_headers=["X-Request-ID", "X-Seed", "X-Finish-Reason", "X-Runaway-Reason"])
    api = Api(app)
    from .routes import generate, health, info, openai, playground, realtime, voices

    api.register_blueprint(health.blp)
    api.register_blueprint(info.blp)
    api.register_blueprint(generate.blp)
    api.register_blueprint(voices.blp)
    api.register_blueprint(openai.blp)
    app.register_blueprint(metrics.blp)
    app.register_blueprint(playground.blp)
    app.register_blueprint(realtime.blp)
    app.register_blueprint(docs_ui.blp)
    errors.register(app)

    rt = runtime or Runtime(settings)
    app.extensions["higgs"] = rt
    _install_request_log(app, settings)
    auth.install(app, settings.api_key)
    rt.start()
    return app


def _warn_unknown_variables() -> None:
    """A HIGGS_* variable no setting reads is most likely a typo that leaves a default in force: say so."""
    for name, closest in Settings.unknown_variables():
        hint = f"; did you mean {closest}?" if closest else ""
        log.warning("%s is not a setting this server knows: it has no effect%s", name, hint)


def _install_request_log(app: Flask, settings: Settings) -> None:
    max_json = settings.max_body_kb * 1024

    @app.before_request
    def _begin():
        incoming = request.headers.get("X-Request-ID", "")
        g.request_id = incoming if _REQUEST_ID.fullmatch(incoming) else uuid.uuid4().hex[:16]
        g.started = time.perf_counter()
        sock = request.environ.get("gunicorn.socket")
        if sock is not None:
            # Every read and write of this client may make no progress for at most client_timeout seconds: a client
            # that stops reading a stream is cut off (its generation stops), a slow body cannot hold a thread forever.
            sock.settimeout(settings.client_timeout)
        if request.mimetype == "application/json":
            too_large = errors.PayloadTooLarge("body", f"JSON body is larger than the {settings.max_body_kb} KB limit")
            if (request.content_length or 0) > max_json:
                raise too_large
            if request.content_length is None:  # chunked: read it now, one byte past the limit at most
                request.max_content_length = max_json + 1
                if len(request.get_data(cache=True)) > max_json:
                    raise too_large

    @app.after_request
    def _end(response):
        response.headers.setdefault("X-Request-ID", g.get("request_id", ""))
        elapsed = (time.perf_counter() - g.get("started", time.perf_counter())) * 1000
        endpoint = request.url_rule.rule if request.url_rule else "unmatched"
        metrics.REQUESTS.labels(endpoint, request.method, str(response.status_code)).inc()
        streaming = " (stream opened)" if response.is_streamed else ""
        log.info("%s %s %s %d %.1fms%s", g.get("request_id", "-"), request.method, request.path,
                 response.status_code, elapsed, streaming)
        return response
