"""One blueprint per endpoint group. Routes turn HTTP into plain requests and results back into HTTP.

Every blueprint parses bodies with SafeParser: JSON that nests too deeply or holds a number too long to convert is
a 400 naming the body (Python's json raises RecursionError / ValueError there, which webargs would pass on as 500),
and a JSON endpoint's body of another type is a 415 (webargs would read it as no body: "missing field 'text'").
Unknown file parts are refused like unknown form fields (webargs ignores them): `ref_audio_files=@clip.wav` is a
422 naming the part, not a generation without the clip.
"""

from __future__ import annotations

import flask_smorest
from webargs.flaskparser import FlaskParser, is_json_request

from model_pool.errors import InvalidRequest

from ..http_errors import NotJson


class SafeParser(FlaskParser):
    DEFAULT_UNKNOWN_BY_LOCATION = {**FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION, "files": None}  # None: the schema's RAISE

    def _raw_load_json(self, req):
        if not is_json_request(req):
            raise NotJson(req.mimetype)
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise InvalidRequest("body", "the JSON body nests too deeply") from None
        except ValueError as exc:  # int() of a 5000-digit number, and the like (JSONDecodeError is handled above)
            raise InvalidRequest("body", f"the JSON body cannot be read: {str(exc).split(';')[0][:120]}") from None


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = SafeParser()
