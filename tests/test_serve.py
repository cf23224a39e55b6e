"""``classicnets serve``: a real server on a free loopback port, real HTTP requests (http.client), real
checkpoints written by the engine. Every bad input is refused with a 4xx and a JSON message, and the next
request is served; a full worker pool answers 503 with Retry-After; a small load test sees no 5xx."""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
from PIL import Image

from classicnets.serve import ServeConfig, Server

ROOT = Path(__file__).resolve().parents[1]


sys.path.insert(0, str(ROOT / "benchmarks"))
import serve_load  # (benchmarks/serve_load.py: its request builders and the load test itself)


# ---------------------------------------------------------------------------------------------- fixtures
# Three runs written by the real engine on mnist-5k (small val and test sets: seconds, not tens): a LeNet-5
# good enough to read a drawn digit (3 epochs on 4,000 images, ~95%), and a residual/plain twin pair one
# folder deeper (runs/*/*/best.pt).
SERVE_RUNS = {
    "lenet5_modern": ("lenet5_modern", {"epochs": 3, "batch_size": 64, "lr": 0.05}),
    "twins/resnet20": ("resnet20", {"epochs": 1, "subset": 256, "batch_size": 32, "lr": 0.05}),
    "twins/plain20": ("plain20", {"epochs": 1, "subset": 256, "batch_size": 32, "lr": 0.05}),
}


@pytest.fixture(scope="session")
def serve_runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs folder with the SERVE_RUNS checkpoints, trained once per test session."""
    from classicnets.train.config import TrainConfig, config_from_dict
    from classicnets.train.engine import fit

    runs = tmp_path_factory.mktemp("serve") / "runs"
    for name, (model, extra) in SERVE_RUNS.items():
        parent, _, leaf = name.rpartition("/")
        config = config_from_dict(
            dict(model=model, data="mnist-5k", threads=1, num_workers=0, tensorboard=False, progress=False,
                 out_dir=str(runs / parent), name=leaf, **extra),
            base=TrainConfig(),
        )  # fmt: skip
        fit(config, log=lambda _: None)
    return runs


@contextmanager
def running(config: ServeConfig, host: str = "127.0.0.1"):
    """The app for ``config`` served by uvicorn on a free port in a thread, until the block ends."""
    server = Server(config, host=host, port=0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.02)
    try:
        yield server
    finally:
        server.stop()
        thread.join(15)


@pytest.fixture(scope="module")
def server(serve_runs: Path):
    with running(ServeConfig(runs_dir=serve_runs, weights=())) as s:
        yield s


def fashion_png(i: int = 0) -> bytes:
    """Fashion-MNIST test image ``i`` as a PNG file's bytes (28x28 grey, a light garment on black)."""
    from classicnets.data import load_dataset

    buffer = io.BytesIO()
    Image.fromarray(load_dataset("fashion-mnist").test.images[i, 0].numpy()).save(buffer, format="PNG")
    return buffer.getvalue()


def call(server: Server, method: str, path: str, body: bytes | None = None, ctype: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict, http.client.HTTPResponse]:  # fmt: skip
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.request(method, path, body=body, headers={**({"Content-Type": ctype} if ctype else {}), **(headers or {})})
        response = conn.getresponse()
        data = response.read()
    finally:
        conn.close()
    try:
        payload = json.loads(data)
    except ValueError:
        payload = {"text": data.decode(errors="replace")}
    return response.status, payload, response


def post_image(server: Server, endpoint: str, model: str, png: bytes, as_json: bool = False, **extra):
    if as_json:
        body = {"model": model, "image": "data:image/png;base64," + base64.b64encode(png).decode(), **extra}
        return call(server, "POST", f"/api/{endpoint}", json.dumps(body).encode(), "application/json")
    body, ctype = serve_load.multipart({"model": model, "image": png, **{k: str(v) for k, v in extra.items()}})
    return call(server, "POST", f"/api/{endpoint}", body, ctype)


def models_by_label(server: Server) -> dict[str, dict]:
    status, payload, _ = call(server, "GET", "/api/models")
    assert status == 200
    return {m["label"]: m for m in payload["models"]}


# ---------------------------------------------------------------------------------------------- the API
def test_models_are_listed_under_opaque_ids_with_their_twins(server: Server, serve_runs: Path) -> None:
    status, payload, _ = call(server, "GET", "/api/models")
    assert status == 200 and payload["skipped"] == []
    models = {m["label"]: m for m in payload["models"]}
    assert set(models) == {"lenet5_modern", "twins/resnet20", "twins/plain20"}  # */best.pt and */*/best.pt
    text = json.dumps(payload)
    assert str(serve_runs) not in text and "best.pt" not in text  # the page never sees a path
    for m in models.values():
        assert m["id"].startswith("m") and len(m["id"]) == 11 and m["kind"] == "run"
    resnet, plain = models["twins/resnet20"], models["twins/plain20"]
    assert resnet["twins"] == [plain["id"]] and plain["twins"] == [resnet["id"]]
    assert resnet["residual"] and not plain["residual"] and models["lenet5_modern"]["twins"] == []
    assert models["lenet5_modern"]["input_size"] == [1, 32, 32] and models["lenet5_modern"]["accuracy"] > 0.8


def test_shipped_weights_are_offered_by_id_with_their_twins_and_test_accuracy(tmp_path: Path) -> None:
    from classicnets.inference import predict
    from classicnets.weights import get_weight

    twins = ("fashion-mnist:resnet20", "fashion-mnist:plain20")
    (tmp_path / "img.png").write_bytes(fashion_png(0))
    with running(ServeConfig(runs_dir=tmp_path / "no-runs", weights=twins)) as server:
        models = models_by_label(server)
        assert set(models) == set(twins) and {m["kind"] for m in models.values()} == {"weight"}
        resnet, plain = (models[name] for name in twins)
        assert resnet["twins"] == [plain["id"]] and plain["twins"] == [resnet["id"]]
        assert resnet["accuracy"] == get_weight(twins[0]).test_acc and resnet["accuracy_kind"] == "test"
        status, payload, _ = post_image(server, "predict", resnet["id"], fashion_png(0))
    expected = predict(twins[0], [tmp_path / "img.png"], topk=5, device="cpu")[0]["top"]
    assert status == 200 and [(t["class"], t["prob"]) for t in payload["top"]] == [
        (name, pytest.approx(p, abs=1e-5)) for name, p in expected]
    assert payload["top"][0]["class"] == "Ankle boot"  # the first Fashion-MNIST test image


def test_predict_by_file_and_by_data_url_matches_classicnets_predict(server: Server, serve_runs: Path,
                                                                     tmp_path: Path) -> None:  # fmt: skip
    from classicnets.inference import predict

    png = fashion_png(3)
    (tmp_path / "img.png").write_bytes(png)
    for label in ("lenet5_modern", "twins/resnet20"):
        model = models_by_label(server)[label]["id"]
        expected = predict(serve_runs / label / "best.pt", [tmp_path / "img.png"], topk=5, device="cpu")[0]["top"]
        for as_json in (False, True):
            status, payload, _ = post_image(server, "predict", model, png, as_json=as_json)
            assert status == 200, payload
            assert [t["class"] for t in payload["top"]] == [name for name, _ in expected]
            assert [t["prob"] for t in payload["top"]] == pytest.approx([p for _, p in expected], abs=1e-5)


def test_features_show_every_stage_with_its_shape(server: Server) -> None:
    models = models_by_label(server)
    status, lenet, _ = post_image(server, "features", models["lenet5_modern"]["id"], fashion_png())
    assert status == 200, lenet
    assert [(s["label"], s["shape"]) for s in lenet["stages"]] == [
        ("C1", [6, 28, 28]), ("S2", [6, 14, 14]), ("C3", [16, 10, 10]), ("S4", [16, 5, 5]), ("C5", [120, 1, 1])]
    assert [len(s["images"]) for s in lenet["stages"]] == [6, 6, 8, 8, 1]  # 8 channels at most; C5 as one grid
    assert lenet["input"]["shape"] == [1, 32, 32] and "zero-padded" in lenet["input"]["note"]
    c3 = Image.open(io.BytesIO(base64.b64decode(lenet["stages"][2]["images"][0].split(",", 1)[1])))
    assert c3.size == (10, 10)

    status, resnet, _ = post_image(server, "features", models["twins/resnet20"]["id"], fashion_png(), as_json=True,
                                   max_channels=3)  # fmt: skip
    assert status == 200, resnet
    assert [(s["name"], s["shape"], len(s["images"])) for s in resnet["stages"]] == [
        ("relu", [16, 28, 28], 3), ("layer1", [16, 28, 28], 3), ("layer2", [32, 14, 14], 3), ("layer3", [64, 7, 7], 3)]


def test_gradcam_explains_the_predicted_class_or_a_named_one(server: Server) -> None:
    model = models_by_label(server)["lenet5_modern"]["id"]
    status, cam, _ = post_image(server, "gradcam", model, fashion_png())
    assert status == 200, cam
    assert cam["layer"] == "features.s4" and cam["layer_label"] == "S4" and cam["layer_shape"] == [16, 5, 5]
    assert cam["target"] == cam["predicted"]
    overlay = Image.open(io.BytesIO(base64.b64decode(cam["overlay"].split(",", 1)[1])))
    assert overlay.size == (128, 128) and overlay.mode == "RGB"  # the 32x32 input at 4x
    other = "0" if cam["predicted"]["class"] != "0" else "1"
    status, named, _ = post_image(server, "gradcam", model, fashion_png(), target=other)
    assert status == 200 and named["target"]["class"] == other and named["predicted"] == cam["predicted"]


def test_layer_table_is_the_summary_of_the_model(server: Server, serve_runs: Path) -> None:
    from classicnets.inference import load_trained
    from classicnets.summary import summary

    model = models_by_label(server)["twins/resnet20"]["id"]
    status, table, _ = call(server, "GET", f"/api/models/{model}/layers")
    assert status == 200, table
    net, record = load_trained(serve_runs / "twins/resnet20/best.pt")
    expected = summary(net, record.input_size)
    assert table["total_params"] == expected.total_params and table["total_macs"] == expected.total_macs
    assert [r["name"] for r in table["rows"]] == [r.name for r in expected.rows]
    first = table["rows"][0]
    assert (first["formula"], first["output_shape"], first["receptive_field"]) == ("3*3*1*16", [16, 28, 28], 3)


def test_claims_say_how_to_make_them_then_show_the_reports(server: Server, serve_runs: Path) -> None:
    status, claims, _ = call(server, "GET", "/api/claims")
    assert status == 200 and claims["claims"] == [] and "classicnets claims run all" in claims["message"]
    assert str(serve_runs) not in claims["message"]
    study = serve_runs / "claims" / "degradation"
    study.mkdir(parents=True)
    try:
        (study / "report.md").write_text("# Deeper plain nets train worse\n\nplain56 > plain20 error.\n")
        (study / "verdict.json").write_text(json.dumps({"claim": "deeper plain nets degrade", "verdict": "holds"}))
        (study / "notes.txt").write_text("not listed")
        status, claims, _ = call(server, "GET", "/api/claims")
    finally:
        shutil.rmtree(serve_runs / "claims")
    assert status == 200 and claims["message"] is None
    (only,) = claims["claims"]
    assert only["name"] == "degradation" and only["report"].startswith("# Deeper plain nets")
    assert only["verdicts"] == [{"file": "verdict.json", "verdict": {"claim": "deeper plain nets degrade",
                                                                     "verdict": "holds"}}]  # fmt: skip


def test_the_page_and_the_api_docs_are_served_offline(server: Server) -> None:
    status, page, response = call(server, "GET", "/")
    assert status == 200 and 'id="canvas"' in page["text"] and "http" not in page["text"].replace('href="/', "")
    assert "script-src 'self'" in response.getheader("Content-Security-Policy")
    for asset in ("/static/app.js", "/static/style.css"):
        status, _, _ = call(server, "GET", asset)
        assert status == 200
    status, docs, _ = call(server, "GET", "/docs")
    assert status == 200 and "/static-offline-docs/swagger-ui-bundle.js" in docs["text"] and "cdn." not in docs["text"]
    assert call(server, "GET", "/static-offline-docs/swagger-ui-bundle.js")[0] == 200
    status, spec, _ = call(server, "GET", "/openapi.json")
    assert {"/api/models", "/api/predict", "/api/features", "/api/gradcam", "/api/models/{model_id}/layers",
            "/api/claims"} <= set(spec["paths"])  # fmt: skip
    assert set(spec["paths"]["/api/predict"]["post"]["requestBody"]["content"]) == {"multipart/form-data",
                                                                                    "application/json"}  # fmt: skip


# ---------------------------------------------------------------------------------------------- bad input
def _chunked(server: Server, body_size: int) -> tuple[int, dict]:
    """A multipart upload sent without Content-Length (chunked), ``body_size`` bytes of image."""
    model = "m0000000000"
    body, ctype = serve_load.multipart({"model": model, "image": b"\0" * body_size})
    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    try:
        conn.putrequest("POST", "/api/predict")
        conn.putheader("Content-Type", ctype)
        conn.putheader("Transfer-Encoding", "chunked")
        conn.endheaders()
        try:
            for i in range(0, len(body), 65536):
                piece = body[i : i + 65536]
                conn.send(f"{len(piece):X}\r\n".encode() + piece + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed while we were still sending: the answer is what counts
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def _data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _truncated_png() -> bytes:
    """A PNG of noise cut in half: its header is intact, its pixels are not."""
    import numpy as np

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 100), dtype=np.uint8)).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def _form(**fields: str | bytes) -> tuple[bytes, str]:
    return serve_load.multipart(fields)


def _json(body: object) -> tuple[bytes, str]:
    return json.dumps(body).encode(), "application/json"


P, F, G = "/api/predict", "/api/features", "/api/gradcam"
BAD = {
    # name: (path, body from (model id, a good PNG) or None for a GET, status, words in the error)
    "upload over 5 MB": (P, lambda m, p: _form(model=m, image=b"\0" * (6 << 20)), 413, "limit"),
    "not an image": (P, lambda m, p: _form(model=m, image=b"GIF89 not really"), 415, "not an image"),
    "bomb 50000x50000": (P, lambda m, p: _form(model=m, image=serve_load.bomb_png(50_000)), 413, "pixels"),
    "bomb 5000x5000": (F, lambda m, p: _form(model=m, image=serve_load.bomb_png(5_000)), 413, "5000x5000"),
    "truncated png": (P, lambda m, p: _form(model=m, image=_truncated_png()), 400, "cannot be decoded"),
    "text/plain": (P, lambda m, p: (p, "text/plain"), 415, "multipart/form-data"),
    "no content type": (P, lambda m, p: (p, None), 415, "content type"),
    "malformed json": (P, lambda m, p: (b'{"model": "' + m.encode() + b'", "image": ', "application/json"), 400,
                       "malformed JSON"),
    "json list": (P, lambda m, p: (b"[1, 2]", "application/json"), 400, "object"),
    "unknown field": (P, lambda m, p: _json({"model": m, "image": "x", "path": "/etc"}), 400, "unknown field"),
    "missing image": (P, lambda m, p: _form(model=m), 400, "missing field 'image'"),
    "not a data url": (P, lambda m, p: _json({"model": m, "image": "/etc/passwd"}), 400, "data URL"),
    "bad base64": (P, lambda m, p: _json({"model": m, "image": "data:image/png;base64,@@@"}), 400, "base64"),
    "image not a string": (P, lambda m, p: _json({"model": m, "image": [1, 2]}), 400, "data URL string"),
    "model not a string": (P, lambda m, p: _json({"model": 5, "image": _data_url(p)}), 400, "must be a string"),
    "unknown model id": (P, lambda m, p: serve_load.json_body("m0123456789", p), 404, "unknown model id"),
    "absolute path as model": (P, lambda m, p: serve_load.json_body("/etc/passwd", p), 400, "never by a file path"),
    "relative path as model": (G, lambda m, p: _form(model="../lenet5_modern/best.pt", image=p), 400,
                               "never by a file path"),
    "label as model": (P, lambda m, p: serve_load.json_body("lenet5_modern", p), 400, "is listed as id"),
    "max_channels 0": (F, lambda m, p: _form(model=m, image=p, max_channels="0"), 400, "max_channels"),
    "unknown class": (G, lambda m, p: _form(model=m, image=p, target="Zebra"), 400, "unknown class"),
    "path in the layers url": ("/api/models/..%2F..%2Fetc%2Fpasswd/layers", None, 404, "no such page"),
    "file in the layers url": ("/api/models/best.pt/layers", None, 400, "never by a file path"),
    "unknown layers id": ("/api/models/m9999999999/layers", None, 404, "unknown model id"),
    "unknown route": ("/etc/passwd", None, 404, "no such page"),
    "wrong method": (P, None, 405, "Method Not Allowed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_gets_a_clear_4xx_and_the_next_request_is_served(server: Server, case: str) -> None:
    path, build, expected, words = BAD[case]
    model = models_by_label(server)["lenet5_modern"]["id"]
    png = fashion_png()
    body, ctype = build(model, png) if build else (None, None)
    status, payload, _ = call(server, "POST" if build else "GET", path, body, ctype)
    assert status == expected, payload
    assert words in payload["error"], payload
    status, payload, _ = post_image(server, "predict", model, png)
    assert status == 200 and len(payload["top"]) == 5


def test_any_json_body_gets_an_answer_below_500(server: Server) -> None:
    """Fields of every JSON type, right or wrong: the server refuses with a 4xx or answers, never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    model = models_by_label(server)["lenet5_modern"]["id"]
    scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30)
    values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5),
                                                                                              inner, max_size=3),
                          max_leaves=6)  # fmt: skip
    good = {"model": st.just(model), "image": st.sampled_from([_data_url(fashion_png()), "data:image/png;base64,"]),
            "target": st.sampled_from(["0", "1", 2]), "max_channels": st.integers(1, 64)}  # fmt: skip
    bodies = st.fixed_dictionaries({key: good[key] | values for key in ("model", "image")},
                                   optional={key: good[key] | values for key in ("target", "max_channels")}) | values

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(body=bodies, endpoint=st.sampled_from(["predict", "features", "gradcam"]))
    def check(body, endpoint: str) -> None:
        status, payload, _ = call(server, "POST", f"/api/{endpoint}", json.dumps(body).encode(), "application/json")
        assert status < 500 and (status == 200 or "error" in payload), (status, payload)

    check()


def test_a_field_sent_twice_and_a_chunked_upload_over_the_limit_are_refused(server: Server) -> None:
    model = models_by_label(server)["lenet5_modern"]["id"]
    body, ctype = serve_load.multipart({"model": model, "image": fashion_png()})
    boundary = ctype.split("boundary=")[1].encode()
    model_part = body.split(b"--" + boundary)[1]
    doubled = b"--" + boundary + model_part + body  # the model field twice
    status, payload, _ = call(server, "POST", "/api/predict", doubled, ctype)
    assert status == 400 and "sent twice" in payload["error"]
    status, payload = _chunked(server, 6 << 20)
    assert status == 413 and "limit" in payload["error"]
    assert post_image(server, "predict", model, fashion_png())[0] == 200


def test_requests_addressed_to_another_host_are_refused(server: Server) -> None:
    """A loopback server answers only to 127.0.0.1 / localhost: a web page whose name was rebound to
    127.0.0.1 (DNS rebinding) cannot use it."""
    status, _, _ = call(server, "GET", "/api/models", headers={"Host": "attacker.example"})
    assert status == 400
    status, _, _ = call(server, "GET", "/api/models", headers={"Host": f"localhost:{server.port}"})
    assert status == 200


# ---------------------------------------------------------------------------------------------- load
def test_a_full_worker_pool_answers_503_with_retry_after_and_recovers(server: Server) -> None:
    pool = server.app.state.pool
    model = models_by_label(server)["lenet5_modern"]["id"]
    gate = threading.Event()
    slow = [pool.submit(gate.wait, 30)]  # one slow job holds one worker: the other still serves
    try:
        assert post_image(server, "predict", model, fashion_png())[0] == 200
        slow += [pool.submit(gate.wait, 30) for _ in range(pool.workers + pool.queue - 1)]
        status, payload, response = post_image(server, "predict", model, fashion_png())
        assert status == 503 and response.getheader("Retry-After") == "1" and "busy" in payload["error"]
        assert call(server, "GET", "/api/models")[0] == 200  # the event loop is free: listing, page, docs
        assert call(server, "GET", "/")[0] == 200
    finally:
        gate.set()
    for job in slow:
        job.result(timeout=30)
    assert post_image(server, "predict", model, fashion_png())[0] == 200


def test_predictions_go_before_waiting_feature_maps_and_grad_cams() -> None:
    from classicnets.serve.engine import EXPLAIN, PREDICT, VIEW, WorkerPool

    pool, gate, done = WorkerPool(workers=1, queue=4), threading.Event(), []
    try:
        blocker = pool.submit(gate.wait, 30)
        jobs = [pool.submit(done.append, name, priority=p) for name, p in
                (("gradcam", EXPLAIN), ("features", VIEW), ("predict", PREDICT), ("features 2", VIEW))]  # fmt: skip
        gate.set()
        for job in [blocker, *jobs]:
            job.result(timeout=30)
    finally:
        gate.set()
        pool.close()
    assert done == ["predict", "features", "features 2", "gradcam"]


def test_small_load_has_no_5xx(server: Server) -> None:
    """The CI-sized variant of benchmarks/serve_load.py: 4 clients x 20 requests, bad inputs mixed in."""
    models = models_by_label(server)
    targets = [("lenet5_modern", models["lenet5_modern"]["id"]), ("resnet20", models["twins/resnet20"]["id"])]
    results = serve_load.run_load(server.url, targets, clients=4, requests=20, max_seconds=60)
    assert results.requests == 80 and results.count_5xx == 0, results.table()
    assert results.failures == [], results.failures
    assert {k for k, _ in results.latency} >= {"predict", "features", "bad"}


def test_models_are_loaded_once_and_the_least_recently_used_is_dropped(serve_runs: Path) -> None:
    from classicnets.serve.catalog import Catalog
    from classicnets.serve.engine import ModelCache

    catalog = Catalog(serve_runs, weights=())
    entries = {e.label: e for e in catalog.entries()}
    cache = ModelCache(capacity=2, replicas=2)
    first = cache.get(entries["lenet5_modern"])
    assert cache.get(entries["lenet5_modern"]) is first
    cache.get(entries["twins/resnet20"])
    cache.get(entries["lenet5_modern"])
    cache.get(entries["twins/plain20"])
    assert cache.loaded_ids() == [entries["lenet5_modern"].id, entries["twins/plain20"].id]
    with first.borrow() as a, first.borrow() as b:  # one replica per worker, never the same module twice
        assert a is not b and not a.training


def test_unreadable_checkpoints_are_reported_and_links_out_of_the_runs_folder_ignored(
    serve_runs: Path, tmp_path: Path
) -> None:
    from classicnets.serve.catalog import Catalog

    runs = tmp_path / "runs"
    (runs / "good").mkdir(parents=True)
    shutil.copy(serve_runs / "lenet5_modern" / "best.pt", runs / "good" / "best.pt")
    (runs / "broken").mkdir()
    (runs / "broken" / "best.pt").write_bytes(b"not a checkpoint")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(serve_runs / "lenet5_modern" / "best.pt", outside / "best.pt")
    (runs / "link").mkdir()
    (runs / "link" / "best.pt").symlink_to(outside / "best.pt")
    (runs / "escape").symlink_to(outside)  # a folder link: runs/escape/best.pt is outside too
    catalog = Catalog(runs, weights=())
    assert [e.label for e in catalog.entries()] == ["good"]
    assert [s["file"] for s in catalog.skipped] == ["broken/best.pt"]
    reason = catalog.skipped[0]["reason"]
    assert "not a readable checkpoint" in reason and str(tmp_path) not in reason


# ---------------------------------------------------------------------------------------------- the command
@pytest.mark.processes
def test_the_command_serves_on_loopback_and_says_so(serve_runs: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "classicnets", "serve", "--runs", str(serve_runs), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)  # fmt: skip
    try:
        assert re.match(r"\d+ models: \d+ shipped weights, 3 checkpoints under ", proc.stdout.readline())
        line = proc.stdout.readline().strip()
        assert line.startswith("serving on http://127.0.0.1:")
        assert line.endswith("(loopback only; --host 0.0.0.0 to share)")
        port = int(line.split()[2].rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/health")
        response = conn.getresponse()
        assert response.status == 200 and json.loads(response.read())["workers"] == 2
        conn.close()
    finally:
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "stopped" in out, err


def test_the_command_refuses_an_unknown_weight_in_one_line(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    from classicnets.commands import main

    assert main(["serve", "--weights", "fashion-mnist:nonet", "--runs", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classicnets serve: error: unknown weight 'fashion-mnist:nonet'") and err.count("\n") == 1
    assert main(["serve", "--runs", str(tmp_path), "--port", "70000"]) == 2
    assert "--port must be 0..65535" in capsys.readouterr().err


def test_a_non_loopback_host_is_announced_as_shared(serve_runs: Path) -> None:
    server = Server(ServeConfig(runs_dir=serve_runs, weights=()), host="0.0.0.0", port=0)
    try:
        assert "NOT loopback" in server.announcement()
    finally:
        server.socket.close()  # nothing served: the socket was only bound
        server.app.state.pool.close()
