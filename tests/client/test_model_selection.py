"""The clients against a server of several models and versions: ``--model NAME[:VERSION]`` for
cifar10-client and cifar10-batch over gRPC and HTTP, ``cifar10-client models``, the library's
``model_info`` and ``list_models``. A real server on a repository of tiny models."""

from __future__ import annotations

import json

import pytest

from cifar10_client.batch import main as batch_main
from cifar10_client.cli import main
from cifar10_core import contract
from tests.client.helpers import image_folder
from tests.serving.models import _save, _set_meta
from tests.serving.test_model_repository import add_version, configure
from tests.tiny_model import build_tiny_model


def add_with_accuracy(root, name: str, version: int, accuracy: float) -> None:
    """A tiny model whose metadata carries a validation accuracy, as training writes it."""
    add_version(root, name, version)
    model = build_tiny_model(seed=version)
    _set_meta(model, contract.META_VALIDATION_METRICS,
              json.dumps({"val_accuracy": accuracy, "val_images": 100}))
    _save(model, root / name / str(version) / "model.onnx")


@pytest.fixture
def srv(server_factory, tmp_path):
    root = tmp_path / "repository"
    add_with_accuracy(root, "alpha", 1, 0.5)
    add_with_accuracy(root, "alpha", 2, 0.75)
    configure(root, "alpha", version_policy={"all": {}})
    add_version(root, "beta", 3)
    configure(root, "beta", default=True)
    return server_factory(model_repository=str(root))


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_the_cli_lists_the_models_and_asks_the_one_named(srv, tmp_path, capsys, scheme):
    address = srv.address if scheme == "grpc" else srv.http_address
    code, out, _ = run(capsys, "--address", address, "models")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == ["MODEL", "VERSION", "DEFAULT", "VALIDATION", "TEST",
                                              "CREATED"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["alpha", "2", "75.00", "%"], ["alpha", "1", "50.00", "%"], ["beta", "3", "yes", "-"]]
    code, out, _ = run(capsys, "--address", address, "models", "--json")
    listed = json.loads(out)
    assert listed["default_model"] == "beta"
    assert [(m["name"], m["version"]) for m in listed["models"]] == [
        ("alpha", "2"), ("alpha", "1"), ("beta", "3")]

    code, out, _ = run(capsys, "--address", address, "info", "--model", "alpha:1", "--json")
    assert code == 0 and (json.loads(out)["name"], json.loads(out)["version"]) == ("alpha", "1")
    code, out, _ = run(capsys, "--address", address, "info", "--json")
    assert (json.loads(out)["name"], json.loads(out)["version"]) == ("beta", "3")

    paths = image_folder(tmp_path / "images", per_class=1)
    answers = {}
    for spec in ("", "alpha", "alpha:1"):
        code, out, _ = run(capsys, "--address", address, "classify", *paths, "--json",
                           *(("--model", spec) if spec else ()))
        assert code == 0
        answers[spec] = json.loads(out)
    assert {(r["model_name"], r["model_version"]) for r in answers[""]} == {("beta", "3")}
    assert {(r["model_name"], r["model_version"]) for r in answers["alpha"]} == {("alpha", "2")}
    assert {(r["model_name"], r["model_version"]) for r in answers["alpha:1"]} == {("alpha", "1")}

    code, _, err = run(capsys, "--address", address, "classify", paths[0], "--model", "gamma")
    assert code == 4 and "NOT_FOUND" in err and "unknown model 'gamma'" in err
    code, _, err = run(capsys, "--address", address, "info", "--model", "alpha:7")
    assert code == 4 and "unknown version '7' of model 'alpha'" in err
    with pytest.raises(SystemExit):
        main(["--address", address, "info", "--model", "alpha:"])


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_batch_asks_the_model_named(srv, tmp_path, scheme):
    address = srv.address if scheme == "grpc" else srv.http_address
    folder = tmp_path / "images"
    image_folder(folder, per_class=1)
    out = tmp_path / "out.jsonl"
    assert batch_main([str(folder), "-o", str(out), "--address", address, "--model", "alpha:1",
                       "--no-progress", "--no-confusion-matrix"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows and {(r["model_name"], r["model_version"]) for r in rows} == {("alpha", "1")}
