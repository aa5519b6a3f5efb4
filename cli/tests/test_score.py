"""``mloop score`` against a small fake serving (the real predict API's paths, bodies and error shapes).

The real serving stack is exercised end to end in tests/e2e/test_score.py; here the chunking, the output's
layout and every error path, and that a failed run leaves no output file behind.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from typer.testing import CliRunner

from mloop_cli.main import app, console, err
from mloop_cli.score import instances, rechunk, request_bodies

FEATURES = ["usage", "plan"]
CLASSES = ["no", "yes"]


@dataclass
class FakeServing:
    """Serves model ``churn`` (versions 1 and 2): "yes" when usage > 10, and remembers every request."""

    url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_on_request: int | None = None  # answer this request (1-based) with a 500
    max_instances: int = 10_000

    def app(self) -> FastAPI:
        application = FastAPI()
        ids = itertools.count()

        @application.get("/v2/models/{name}")
        async def metadata(name: str) -> JSONResponse:
            if name != "churn":
                return JSONResponse({"error": f"model {name!r} is not served here"}, 404)
            return JSONResponse({"name": name, "inputs": [{"name": f} for f in FEATURES]})

        @application.post("/v1/models/{name}:predict")
        async def predict(name: str, request: Request) -> JSONResponse:
            return await self.answer(name, 2, request, ids)

        @application.post("/v1/models/{name}/versions/{version}:predict")
        async def predict_version(name: str, version: int, request: Request) -> JSONResponse:
            return await self.answer(name, version, request, ids)

        return application

    async def answer(self, name: str, version: int, request: Request, ids: Iterator[int]) -> JSONResponse:
        body = await request.json()
        self.requests.append(
            {"path": request.url.path, "query": request.url.query, "body": body, "headers": dict(request.headers)}
        )
        if self.fail_on_request == len(self.requests):
            return JSONResponse({"error": {"code": "internal", "message": "boom"}}, 500)
        if name != "churn" or version not in (1, 2):
            message = f"model {name!r} is not served here (no production version loaded)"
            return JSONResponse({"error": {"code": "not_found", "message": message}}, 404)
        rows = body["instances"]
        if len(rows) > self.max_instances:
            message = f"at most {self.max_instances} instances per request"
            return JSONResponse({"error": {"code": "invalid_input", "message": message, "field": "instances"}}, 422)
        for index, row in enumerate(rows):
            for feature in FEATURES:
                if feature not in row:
                    error = {
                        "code": "invalid_input",
                        "message": f"instances[{index}] lacks feature {feature!r}",
                        "field": f"instances[{index}].{feature}",
                    }
                    return JSONResponse({"error": error}, 422)
        yes = [r["usage"] is not None and r["usage"] > 10 for r in rows]
        return JSONResponse(
            {
                "predictions": ["yes" if y else "no" for y in yes],
                "model_version": version,
                "route": "champion",
                "request_ids": [f"req-{next(ids)}" for _ in rows],
                "probabilities": [[0.2, 0.8] if y else [0.9, 0.1] for y in yes],
                "classes": CLASSES,
            }
        )


@pytest.fixture
def serving(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeServing]:
    fake = FakeServing()
    server = uvicorn.Server(uvicorn.Config(fake.app(), host="127.0.0.1", port=0, lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)  # waits for the listening socket, asserts nothing about time
    fake.url = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    monkeypatch.setenv("MLOOP_SERVING_URL", fake.url)
    for output in (console, err):
        monkeypatch.setattr(output, "width", 300)  # whole error lines, whatever the terminal
    yield fake
    server.should_exit = True
    thread.join()


def churn(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "customer": [f"c{i}" for i in range(rows)],
            "usage": rng.normal(10, 2, rows).round(3),
            "plan": rng.choice(["basic", "pro"], rows),
        }
    )


runner = CliRunner()


def mloop(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, ["score", *args])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_a_csv_is_scored_in_chunks_and_every_row_gets_its_prediction_in_order(serving, tmp_path):
    frame = churn(2_345)
    source = tmp_path / "customers.csv"
    frame.to_csv(source, index=False)
    out = tmp_path / "scored.parquet"

    result = mloop("churn", str(source), "-o", str(out), "--chunk-rows", "500")

    assert result.exit_code == 0, result.output
    assert "scored 2,345 rows" in result.output and "v2" in result.output
    scored = pd.read_parquet(out)
    assert list(scored.columns) == [
        "customer", "usage", "plan", "row", "prediction", "probability_no", "probability_yes", "request_id",
        "model_version",
    ]  # fmt: skip
    assert scored["customer"].tolist() == frame["customer"].tolist()
    assert scored["row"].tolist() == list(range(2_345))
    assert scored["prediction"].tolist() == np.where(frame["usage"] > 10, "yes", "no").tolist()
    assert scored["probability_yes"].tolist() == np.where(frame["usage"] > 10, 0.8, 0.1).tolist()
    assert scored["request_id"].is_unique and set(scored["model_version"]) == {2}
    assert [len(r["body"]["instances"]) for r in serving.requests] == [500, 500, 500, 500, 345]
    # Only the model's features are sent (and logged by serving), not the customer column.
    assert all(set(row) == set(FEATURES) for r in serving.requests for row in r["body"]["instances"])
    # One routing key for the whole run, so a canary split never scores one file with two versions.
    assert len({r["headers"]["x-mloop-routing-key"] for r in serving.requests}) == 1
    assert leftovers(tmp_path) == []


def test_a_parquet_file_is_scored_by_the_version_asked_for_without_its_inputs(serving, tmp_path):
    frame = churn(1_200)
    source = tmp_path / "customers.parquet"
    frame.to_parquet(source, row_group_size=300)

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"), "--version", "1", "--no-inputs")

    assert result.exit_code == 0, result.output
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert "customer" not in scored.columns and "usage" not in scored.columns
    assert scored["row"].tolist() == list(range(1_200)) and set(scored["model_version"]) == {1}
    assert scored["prediction"].tolist() == np.where(frame["usage"] > 10, "yes", "no").tolist()
    assert {r["path"] for r in serving.requests} == {"/v1/models/churn/versions/1:predict"}


def test_predictions_are_logged_unless_no_log_is_asked_for(serving, tmp_path):
    source = tmp_path / "customers.csv"
    churn(10).to_csv(source, index=False)

    logged = mloop("churn", str(source), "-o", str(tmp_path / "a.parquet"))
    unlogged = mloop("churn", str(source), "-o", str(tmp_path / "b.parquet"), "--no-log")

    assert logged.exit_code == unlogged.exit_code == 0, logged.output + unlogged.output
    assert [r["query"] for r in serving.requests] == ["", "log=false"]


def test_missing_values_are_sent_as_null(serving, tmp_path):
    source = tmp_path / "gaps.parquet"
    pd.DataFrame({"usage": [12.0, np.nan, None], "plan": ["pro", None, "basic"]}).to_parquet(source)

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 0, result.output
    assert serving.requests[0]["body"]["instances"][1] == {"usage": None, "plan": None}
    assert pd.read_parquet(tmp_path / "out.parquet")["prediction"].tolist() == ["yes", "no", "no"]


def test_an_existing_output_is_kept_unless_forced(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(10).to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"precious")

    refused = mloop("churn", str(source), "-o", str(out))

    assert refused.exit_code == 1 and "exists; pass --force" in refused.output
    assert out.read_bytes() == b"precious" and serving.requests == []
    forced = mloop("churn", str(source), "-o", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert len(pd.read_parquet(out)) == 10


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("absent.csv", None, "no such file"),
        ("data.json", b"{}", "unknown extension '.json' (expected .csv or .parquet)"),
        ("broken.parquet", b"not parquet at all", "not a readable Parquet file"),
    ],
)
def test_an_unreadable_input_is_a_one_line_error(serving, tmp_path, name, content, message):
    source = tmp_path / name
    if content is not None:
        source.write_bytes(content)

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 1
    assert message in result.output
    assert not (tmp_path / "out.parquet").exists() and leftovers(tmp_path) == []


def test_an_unknown_model_shows_servings_404(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(10).to_csv(source, index=False)

    result = mloop("nobody", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 1
    assert "error 404" in result.output and "model 'nobody' is not served here" in result.output
    assert not (tmp_path / "out.parquet").exists() and leftovers(tmp_path) == []


def test_a_column_the_model_needs_missing_shows_servings_message(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(10).drop(columns=["plan"]).to_csv(source, index=False)

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 1
    assert "error 422" in result.output and "lacks feature 'plan'" in result.output
    assert "field: instances[0].plan" in result.output
    assert not (tmp_path / "out.parquet").exists()


def test_a_failure_after_some_chunks_leaves_no_partial_output_and_keeps_the_old_one(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(1_000).to_csv(source, index=False)
    out = tmp_path / "out.parquet"
    out.write_bytes(b"yesterday's scores")
    serving.fail_on_request = 3  # two chunks are already written when the third fails

    result = mloop("churn", str(source), "-o", str(out), "--chunk-rows", "200", "--force")

    assert result.exit_code == 1 and "error 500" in result.output and "boom" in result.output
    assert len(serving.requests) == 3
    assert out.read_bytes() == b"yesterday's scores" and leftovers(tmp_path) == []


def test_serving_unreachable_is_a_clear_error(serving, tmp_path, monkeypatch):
    source = tmp_path / "in.csv"
    churn(10).to_csv(source, index=False)
    monkeypatch.setenv("MLOOP_SERVING_URL", "http://127.0.0.1:9")  # the discard port: nothing listens

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 1
    assert "serving is not reachable at http://127.0.0.1:9" in result.output
    assert not (tmp_path / "out.parquet").exists() and leftovers(tmp_path) == []


def test_input_columns_named_like_output_columns_are_refused_unless_inputs_are_dropped(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(10).assign(prediction=1).to_csv(source, index=False)

    clash = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))
    dropped = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"), "--no-inputs")

    assert clash.exit_code == 1 and "['prediction'] clash with output columns" in clash.output
    assert dropped.exit_code == 0, dropped.output


def test_a_chunk_over_servings_instance_limit_shows_its_message(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(50).to_csv(source, index=False)
    serving.max_instances = 20

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"), "--chunk-rows", "30")

    assert result.exit_code == 1 and "at most 20 instances per request" in result.output


def test_an_empty_input_is_an_error_and_writes_nothing(serving, tmp_path):
    source = tmp_path / "empty.csv"
    source.write_text("usage,plan\n")

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 1 and "the input has no rows" in result.output
    assert not (tmp_path / "out.parquet").exists() and leftovers(tmp_path) == []


def test_a_csv_value_that_does_not_fit_its_columns_type_stops_the_run_without_output(serving, tmp_path):
    source = tmp_path / "in.csv"
    # The streaming reader types each column from the first block (1 MiB): a later word in a number column fails.
    lines = [f"{10 + i % 3},pro" for i in range(400_000)] + ["unknown,basic"]
    source.write_text("usage,plan\n" + "\n".join(lines) + "\n")

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"))

    assert result.exit_code == 1 and f"cannot read {source}" in result.output
    assert "unknown" in result.output
    assert len(serving.requests) >= 1 and not (tmp_path / "out.parquet").exists() and leftovers(tmp_path) == []


def test_an_output_folder_that_does_not_exist_is_a_clear_error(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(10).to_csv(source, index=False)

    result = mloop("churn", str(source), "-o", str(tmp_path / "nowhere" / "out.parquet"))

    assert result.exit_code == 1 and "no such folder" in result.output and serving.requests == []


# --- the pure parts ---------------------------------------------------------------------------


def test_rechunk_yields_exact_sizes_across_batch_boundaries_and_keeps_order():
    batches = [pa.record_batch({"x": list(range(start, start + n))}) for start, n in ((0, 7), (7, 3), (10, 12))]

    chunks = list(rechunk(iter(batches), 5))

    assert [c.num_rows for c in chunks] == [5, 5, 5, 5, 2]
    assert [x for c in chunks for x in c.column("x").to_pylist()] == list(range(22))


def test_instances_keep_only_known_features_and_turn_nan_into_null():
    batch = pa.record_batch({"a": [1.0, float("nan")], "b": ["x", None], "c": [1, 2]})

    assert instances(batch, ["a", "b", "zz"]) == [{"a": 1.0, "b": "x"}, {"a": None, "b": None}]
    assert instances(batch, None)[1] == {"a": None, "b": None, "c": 2}


def test_request_bodies_split_a_chunk_whose_json_is_too_large_and_keep_every_row_in_order():
    rows = [{"text": "x" * 100, "i": i} for i in range(10)]

    parts = list(request_bodies(rows, limit=600))

    assert sum(n for n, _ in parts) == 10 and all(len(body) <= 600 for _, body in parts)
    assert len(parts) > 1
    sent = [row["i"] for _, body in parts for row in json.loads(body)["instances"]]
    assert sent == list(range(10))


def test_output_written_is_valid_parquet_with_one_row_group_per_chunk(serving, tmp_path):
    source = tmp_path / "in.csv"
    churn(1_000).to_csv(source, index=False)

    result = mloop("churn", str(source), "-o", str(tmp_path / "out.parquet"), "--chunk-rows", "250")

    assert result.exit_code == 0, result.output
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 4
