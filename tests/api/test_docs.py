"""The docs against the code (issue 31): docs/api.md documents every endpoint the app serves and every field of the
live /openapi.json, and nothing else; its examples are what the server sends; docs/operations.md's settings table is
app/settings.py's; every link between the README and the docs leads somewhere; the README stays short."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from app.settings import ENV_PREFIX, OTHER_VARIABLES, Settings
from helpers import ROOT, make_app, parse_sse

API_DOC = ROOT / "docs" / "api.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
ENDPOINT = re.compile(r"`(GET|POST|DELETE|WS) (/[^`\s]*)`")
FILES = {"/static/<path:filename>", "/docs/assets/<path:filename>"}  # files a page loads, not endpoints
FIELD_TABLES = {"field": "request", "response field": "response"}  # a field table's first header cell


@pytest.fixture(scope="module")
def client(tmp_path_factory, engine):
    return make_app(tmp_path_factory.mktemp("docs"), engine).test_client()


@pytest.fixture(scope="module")
def app(client):
    return client.application


# ---- reading Markdown ------------------------------------------------------------------------------------------
@dataclass
class Section:
    level: int
    title: str
    body: str  # up to the next heading of the same or a higher level: its subsections included


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


def sections(text: str) -> list[Section]:
    prose = re.sub(r"(?ms)^```.*?^```", "", text)  # a `# comment` in a code block is no heading
    heads = [(m.start(), len(m.group(1)), m.group(2)) for m in re.finditer(r"(?m)^(#{1,6}) (.+)$", prose)]
    found = []
    for i, (start, level, title) in enumerate(heads):
        end = next((s for s, lv, _ in heads[i + 1:] if lv <= level), len(prose))
        found.append(Section(level, title, prose[start:end]))
    return found


def tables(body: str) -> list[tuple[str, list[str]]]:
    """Each table's first header cell and the first cell of each of its rows."""
    found, rows = [], []
    for line in body.splitlines() + [""]:
        if line.startswith("|"):
            rows.append(line.strip("|").split("|")[0].strip())
        elif rows:
            found.append((rows[0], [cell for cell in rows[2:]]))
            rows = []
    return found


def documented_fields(section: Section, by_anchor: dict[str, Section]) -> dict[str, set[str]]:
    """The fields an endpoint's section documents: its own field tables and those of the sections it links to on
    the page ("the body: the [sampling fields](#...)")."""
    linked = [by_anchor[a] for a in re.findall(r"\]\(#([^)]+)\)", section.body)]
    found = {"request": set(), "response": set()}
    for part in [section, *linked]:
        for header, cells in tables(part.body):
            if header in FIELD_TABLES:
                for cell in cells:
                    found[FIELD_TABLES[header]] |= set(re.findall(r"`([a-z][a-z0-9_]*)`", cell))
    return found


# ---- reading OpenAPI -------------------------------------------------------------------------------------------
def properties(spec: dict, schema: dict) -> set[str]:
    """A schema's property names, those of nested objects and list items included."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    names = set()
    for name, prop in schema.get("properties", {}).items():
        names.add(name)
        for inner in (prop, prop.get("items", {})):
            if "$ref" in inner or "properties" in inner:
                names |= properties(spec, inner)
    return names


def openapi_fields(spec: dict, operation: dict) -> dict[str, set[str]]:
    request = {p["name"] for p in operation.get("parameters", []) if p["in"] != "path"}
    for content in operation.get("requestBody", {}).get("content", {}).values():
        request |= properties(spec, content["schema"])
    response = set()
    for status, answer in operation.get("responses", {}).items():
        if status.startswith("2"):
            for content in answer.get("content", {}).values():
                response |= properties(spec, content["schema"])
    return {"request": request, "response": response}


def operations(spec: dict) -> dict[str, dict]:
    return {f"{method.upper()} {path}": op for path, ops in spec["paths"].items()
            for method, op in ops.items() if method != "parameters"}


# ---- docs/api.md -----------------------------------------------------------------------------------------------
def api_doc() -> tuple[list[Section], dict[str, Section]]:
    found = sections(API_DOC.read_text(encoding="utf-8"))
    return found, {anchor(s.title): s for s in found}


def test_every_endpoint_the_app_serves_is_in_the_endpoint_table_and_nothing_else(app, client):
    _, by_anchor = api_doc()
    (table,) = [cells for header, cells in tables(by_anchor["endpoints"].body) if header == "endpoint"]
    documented = [m.group(1, 2) for cell in table for m in ENDPOINT.finditer(cell)]
    assert len(documented) == len(set(documented)) == len(table), table  # one endpoint a row, each once
    served = {("WS" if rule.endpoint.startswith("realtime.") else method,  # a GET upgraded to a WebSocket
               re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", rule.rule))
              for rule in app.url_map.iter_rules() if rule.rule not in FILES
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert set(documented) == served
    in_openapi = {tuple(key.split(" ", 1)) for key in operations(client.get("/openapi.json").json)}
    assert in_openapi <= served and len(in_openapi) >= 14


def test_every_field_of_the_openapi_document_is_documented_and_nothing_else(client):
    spec = client.get("/openapi.json").json
    found, by_anchor = api_doc()
    headed = {}
    for section in found:
        for m in ENDPOINT.finditer(section.title):
            assert m.group(0) not in headed, f"two sections for {m.group(0)}"
            headed[f"{m.group(1)} {m.group(2)}"] = section
    checked = 0
    for key, operation in operations(spec).items():
        live = openapi_fields(spec, operation)
        section = headed.get(key)
        documented = documented_fields(section, by_anchor) if section else {"request": set(), "response": set()}
        for kind in ("request", "response"):
            missing, extra = live[kind] - documented[kind], documented[kind] - live[kind]
            assert not missing and not extra, (f"{key} {kind} fields: in /openapi.json only: {sorted(missing)}; "
                                               f"in docs/api.md only: {sorted(extra)}")
            checked += len(live[kind])
    assert checked >= 120  # the field tables were found and read, not skipped
    assert {"POST /generate", "POST /v1/audio/speech", "GET /info"} <= set(headed)


def test_the_sse_example_is_what_the_server_writes(client):
    """docs/api.md's example lines are JSON formatted like the server's (spaces after ':' and ','), the events in
    the server's order."""
    text = API_DOC.read_text(encoding="utf-8")
    block = text[text.index("event: start"):]
    shown = [line[len("data: "):] for line in block[:block.index("```")].splitlines() if line.startswith("data: ")]
    body = {"text": "Hi.", "temperature": 0, "max_new_tokens": 40, "seed": 3}
    sent = client.post("/generate-stream", json=body, buffered=True).get_data(as_text=True)
    sent_lines = [line[len("data: "):] for line in sent.splitlines() if line.startswith("data: ")]
    assert len(shown) == 3 and sent_lines
    for line in shown + sent_lines:
        assert json.dumps(json.loads(line), ensure_ascii=False) == line
    kinds = [name for name, _ in parse_sse(sent)]
    assert [json.loads(line)["type"] for line in shown] == [kinds[0], "audio", kinds[-1]]
    assert set(json.loads(shown[-1])) == set(json.loads(sent_lines[-1]))  # the done event's fields, all of them


# ---- settings --------------------------------------------------------------------------------------------------
def _shown(value) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value) if value != "" else "(none)"


def test_the_settings_table_is_every_setting_with_its_default():
    """docs/operations.md's Settings: each HIGGS_* variable the server reads, once, with the default app/settings.py
    gives it; and no page names a HIGGS_* variable the server does not know."""
    by_anchor = {anchor(s.title): s for s in sections((ROOT / "docs" / "operations.md").read_text(encoding="utf-8"))}
    rows = [line.split("|")[2:4] for line in by_anchor["settings"].body.splitlines() if "| `HIGGS_" in line]
    table = {re.fullmatch(r"\s*`(HIGGS_[A-Z_]+)`\s*", name).group(1): default.strip() for name, default in rows}
    assert len(table) == len(rows)
    defaults = {ENV_PREFIX + f.name.upper(): _shown(f.default) for f in fields(Settings)}
    assert set(table) == set(defaults)
    for name, default in table.items():
        assert default.split(" (")[0] == defaults[name] or default == defaults[name], (name, default, defaults[name])
    named = {v for page in PAGES for v in re.findall(r"\b(HIGGS_[A-Z_]+[A-Z])\b", page.read_text(encoding="utf-8"))}
    assert named <= set(defaults) | set(OTHER_VARIABLES), sorted(named - set(defaults) - set(OTHER_VARIABLES))


# ---- the README and the links between the pages ----------------------------------------------------------------
def test_the_readme_is_short_and_starts_with_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 250
    first_block = readme[readme.index("```bash\n") + 8:readme.index("```", readme.index("```bash\n") + 8)]
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make run", "make test"]
    assert readme.count("<!-- SUITE-TIME -->") == 1


def test_make_test_ends_with_the_slowest_tests_as_the_readme_says():
    assert "`make test` runs everything and ends with the slowest tests" in (ROOT / "README.md").read_text()
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, timeout=60).stdout
    (pytest_line,) = [line for line in dry.splitlines() if " -m pytest " in line]
    assert re.search(r" --durations=[1-9]\d* ", pytest_line), pytest_line


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_link_between_the_pages_leads_somewhere(page):
    """A relative link names a file that exists and, with #anchor, a heading in it (a section moved from the README
    to docs/api.md leaves no dead link behind)."""
    text = re.sub(r"(?ms)^```.*?^```", "", page.read_text(encoding="utf-8"))
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # http(s), mailto
        target, _, fragment = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: {link}: no such file"
        if fragment and path.suffix == ".md":
            anchors = {anchor(s.title) for s in sections(path.read_text(encoding="utf-8"))}
            assert fragment in anchors, f"{page.name}: {link}: no such heading in {Path(target).name or page.name}"
