"""The API docs: /openapi.json describes every HTTP route (summary, request body, answers and
errors), and /docs (Swagger UI from the installed fastapi_offline) renders them in a real
headless Chromium without loading anything from outside the server."""

from __future__ import annotations

import httpx
import pytest
from fastapi.routing import APIRoute

from cifar10_serving.http_api.app import DOCS_PATH, DOCS_STATIC_PATH, OPENAPI_PATH
from tests.http.browser import chromium, foreign_resources, wait

METHODS = {"get", "post", "put", "delete", "patch"}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from cifar10_serving.settings import Settings
    from cifar10_serving.testing import BackgroundServer
    from tests.tiny_model import write_tiny_model

    model = write_tiny_model(tmp_path_factory.mktemp("model") / "tiny-cnn.onnx")
    settings = Settings(model_path=str(model), host="127.0.0.1", port=0, http_port=0,
                        metrics_port=-1, reload_interval_s=0.0)
    with BackgroundServer(settings) as srv:
        spec = httpx.get(srv.http_address + OPENAPI_PATH, timeout=10).json()
        yield srv, spec


def operations(spec: dict) -> list[tuple[str, str, dict]]:
    return [(method, path, operation) for path, item in spec["paths"].items()
            for method, operation in item.items() if method in METHODS]


def routes_of(routes: list) -> list:
    """The app's routes, those of the routers it includes among them."""
    found = []
    for route in routes:  # FastAPI keeps an included router whole, as its original_router
        included = getattr(route, "original_router", None)
        found += routes_of(included.routes) if included is not None else [route]
    return found


def test_every_route_is_in_the_document(served):
    """Each route of the app is described; only the docs' own pages and files are not."""
    srv, spec = served
    app = srv.service.http.app
    described = {(method, path) for method, path, _ in operations(spec)}
    routes = {(method.lower(), route.path) for route in routes_of(app.routes) if isinstance(route, APIRoute)
              and route.include_in_schema for method in route.methods}
    assert routes == described
    hidden = {getattr(route, "path", "") for route in routes_of(app.routes)
              if not getattr(route, "include_in_schema", False)}
    assert hidden == {OPENAPI_PATH, DOCS_PATH, DOCS_PATH + "/oauth2-redirect", DOCS_STATIC_PATH}
    assert {"/v1/classify", "/v1/model", "/", "/v2/health/live", "/v2/health/ready"} <= set(spec["paths"])


def test_every_operation_says_what_it_does_takes_and_answers(served):
    _, spec = served
    problems = []
    for method, path, operation in operations(spec):
        where = f"{method.upper()} {path}"
        if not operation.get("summary"):
            problems.append(f"{where}: no summary")
        responses = operation.get("responses", {})
        content = responses.get("200", {}).get("content", {})
        if not content or content.get("application/json", {"schema": True}).get("schema") in (None, {}):
            problems.append(f"{where}: no 200 answer with its media type and, for JSON, its schema")
        if "422" in responses:
            problems.append(f"{where}: documents a 422 that the server never answers")
        for status, response in responses.items():
            if status[0] in "45" and not response.get("content", {}).get("application/json", {}).get("schema"):
                problems.append(f"{where}: its {status} answer has no JSON body documented")
        if method == "post" and not operation.get("requestBody", {}).get("content"):
            problems.append(f"{where}: no request body")
    assert not problems, "\n".join(problems)


def test_the_bodies_of_classify_and_infer(served):
    _, spec = served
    classify = spec["paths"]["/v1/classify"]["post"]
    assert set(classify["requestBody"]["content"]) == {
        "image/*", "application/octet-stream", "multipart/form-data", "application/json"}
    assert {p["name"] for p in classify["parameters"]} == {"top_k", "model", "version"}
    answer = classify["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": "#/components/schemas/ClassifyAnswer"}
    assert "results" in spec["components"]["schemas"]["ClassifyAnswer"]["properties"]
    infer = spec["paths"]["/v2/models/{model_name}/infer"]["post"]
    assert "application/json" in infer["requestBody"]["content"]


def test_swagger_ui_renders_every_route_from_this_server_alone(served):
    from selenium.webdriver.common.by import By

    srv, spec = served
    with chromium() as driver:
        driver.get(srv.http_address + DOCS_PATH)
        count = len(operations(spec))
        blocks = wait(driver, lambda d: (lambda found: found if len(found) == count else False)(
            d.find_elements(By.CSS_SELECTOR, ".opblock")))
        shown = {block.find_element(By.CSS_SELECTOR, ".opblock-summary-path").get_attribute(
            "data-path") for block in blocks}
        assert shown == set(spec["paths"])
        page_text = driver.find_element(By.TAG_NAME, "body").text
        assert "Classify images" in page_text and "The web page" in page_text
        assert foreign_resources(driver, srv.http_address) == []
        loaded = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert any(url.endswith(OPENAPI_PATH) for url in loaded)
        assert any(url.endswith("/swagger-ui-bundle.js") for url in loaded)
