"""One blueprint per endpoint group. Routes turn HTTP into plain requests and results back into HTTP.

Every blueprint parses bodies with SafeParser: JSON that nests too deeply or holds a number too long to convert is
a 400 naming the body (Python's json raises RecursionError / ValueError there, which webargs would pass on as 500).
"""

from __future__ import annotations

import flask_smorest
from webargs.flaskparser import FlaskParser

from model_pool.errors import InvalidRequest


class SafeParser(FlaskParser):
    def _raw_load_json(self, req):
        try:
            return super()._raw_load_json(req)
        except RecursionError:
            raise InvalidRequest("body", "the JSON body nests too deeply") from None
        except ValueError as exc:  # int() of a 5000-digit number, and the like (JSONDecodeError is handled above)
            raise InvalidRequest("body", f"the JSON body cannot be read: {str(exc).split(';')[0][:120]}") from None


class Blueprint(flask_smorest.Blueprint):
    ARGUMENTS_PARSER = SafeParser()
