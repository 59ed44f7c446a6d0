"""`nanoformer serve` against a live server on loopback: the openai client, translation equal to the
CLI's, attention from the explicit path, batching that is exact, and every refusal as a JSON error.

The models are a GPT and a translator trained for a few seconds (their outputs follow their
inputs) and random BERT-style encoders (fill-mask, embeddings, classify compare with the library).
"""

from __future__ import annotations

import base64
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import torch
from tiny_checkpoints import LiveServer, trained_gpt, trained_translator, write

from nanoformer.cli import main
from nanoformer.serve import ServeSettings, create_app, load_models

openai = pytest.importorskip("openai", reason="the openai client is a dev dependency (pip install -e '.[dev]')")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("serve")
    paths = {"gpt": trained_gpt(root / "g"), "translator": trained_translator(root / "t"),
             "bert": write(root / "bert", "encoder", seed=3),
             "sentiment": write(root / "sentiment", "encoder", seed=4, num_labels=2, labels=["negative", "positive"])}
    torch.set_num_threads(threads)
    return paths


@pytest.fixture(scope="module")
def served(checkpoints):
    models = load_models([str(p) for p in checkpoints.values()], list(checkpoints))
    app = create_app(models, ServeSettings(batch_wait=0.05))
    with LiveServer(app) as url:
        yield url, {m.name: m for m in models}, app


@pytest.fixture(scope="module")
def client(served):
    url, _, _ = served
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)


def metric(url: str, name: str, **labels) -> float:
    """One sample of GET /metrics (0 if it has not been counted yet)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + "{"):
            series, value = line.rsplit(" ", 1)
            got = ",".join(sorted(series[len(name) + 1 : -1].split(",")))
            if got == wanted:
                return float(value)
    return 0.0


def reference_greedy(model, tokenizer, prompt: str, max_tokens: int) -> str:
    ids = torch.tensor([tokenizer.encode(prompt)])
    out = model.generate(ids, max_new_tokens=max_tokens)[0, ids.shape[1]:].tolist()
    if tokenizer.eos_id in out:
        out = out[: out.index(tokenizer.eos_id)]
    return tokenizer.decode(out)


# --------------------------------------------------------------------------- completions


@pytest.mark.parametrize("prompt", ["나는 학교", "The quick", "I go"])
def test_openai_client_greedy_completion_equals_model_generate(served, client, prompt):
    _, models, _ = served
    gpt = models["gpt"]
    expected = reference_greedy(gpt.model, gpt.tokenizer, prompt, 20)
    answer = client.completions.create(model="gpt", prompt=prompt, max_tokens=20, temperature=0)
    assert answer.choices[0].text == expected
    assert answer.usage.prompt_tokens == len(gpt.tokenizer.encode(prompt))
    streamed = client.completions.create(model="gpt", prompt=prompt, max_tokens=20, temperature=0, stream=True)
    pieces = [chunk.choices[0].text for chunk in streamed]
    assert "".join(pieces) == expected and len([p for p in pieces if p]) > 1


def test_greedy_continuations_depend_on_the_prompt(served, client):
    texts = {client.completions.create(model="gpt", prompt=p, max_tokens=12, temperature=0).choices[0].text
             for p in ("나는 학교", "The quick", "I go", "lazy")}
    assert len(texts) == 4


def test_seeded_sampling_is_reproducible_and_seeds_differ(client):
    def sample(seed: int) -> list[str]:
        answer = client.completions.create(model="gpt", prompt="The", max_tokens=24, temperature=1.5, seed=seed, n=2)
        return [c.text for c in answer.choices]

    first = sample(7)
    assert sample(7) == first
    assert first[0] != first[1]  # the n choices draw apart
    assert sample(8) != first


def test_stop_strings_and_prompt_lists(served, client):
    _, models, _ = served
    gpt = models["gpt"]
    full = reference_greedy(gpt.model, gpt.tokenizer, "나는 학교", 30)
    stop = full[5:7]
    answer = client.completions.create(model="gpt", prompt=["나는 학교", "The quick"], max_tokens=30, temperature=0,
                                       stop=[stop])
    assert answer.choices[0].text == full[: full.index(stop)] and answer.choices[0].finish_reason == "stop"
    assert answer.choices[1].text == reference_greedy(gpt.model, gpt.tokenizer, "The quick", 30).split(stop)[0]


def test_a_prompt_longer_than_the_context_is_cut_or_refused(served):
    url, _, _ = served
    long = "The quick brown fox jumps over the lazy dog. " * 4
    answer = httpx.post(url + "/v1/completions", json={"model": "gpt", "prompt": long, "max_tokens": 3, "temperature": 0})
    assert answer.status_code == 200 and "kept its last 63" in answer.json()["warnings"][0]
    refused = httpx.post(url + "/v1/completions", json={"model": "gpt", "prompt": long, "truncate": False})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "context_length_exceeded"


# --------------------------------------------------------------------------- translation


def test_translate_equals_the_cli(served, checkpoints, capsys):
    url, _, _ = served
    sentences = ["ein mann geht", "katze läuft blau", "hund rot", "groß katze läuft klein"]
    for beam in (1, 4):
        capsys.readouterr()
        assert main(["translate", str(checkpoints["translator"]), *sentences, "--beam-size", str(beam)]) == 0
        expected = capsys.readouterr().out.splitlines()
        answer = httpx.post(url + "/v1/translate", json={"model": "translator", "text": sentences, "beam_size": beam})
        assert [t["text"] for t in answer.json()["translations"]] == expected
    assert expected[0] == "a man walks"


def test_translate_defaults_are_the_checkpoints_generation_settings(checkpoints, tmp_path, capsys):
    """An imported model's generation section (beam, length limits) is the server's default, as it is
    `translate`'s; a request's own beam_size wins."""
    import shutil

    from nanoformer.training.checkpoint import resolve_checkpoint

    folder = tmp_path / "limited"
    shutil.copytree(resolve_checkpoint(checkpoints["translator"]), folder)
    config = json.loads((folder / "config.json").read_text())
    config["generation"] = {"beam_size": 2, "length_penalty": 1.0, "max_len_a": 0.0, "max_len_b": 2}
    (folder / "config.json").write_text(json.dumps(config))
    sentences = ["ein mann geht", "groß katze läuft klein"]
    capsys.readouterr()
    assert main(["translate", str(folder), *sentences]) == 0
    expected = capsys.readouterr().out.splitlines()
    assert expected[0] != "a man walks"  # cut at two tokens: the limit took effect
    models = load_models([str(folder)], ["limited"])
    with LiveServer(create_app(models, ServeSettings(batch_wait=0.01))) as url:
        answer = httpx.post(url + "/v1/translate", json={"model": "limited", "text": sentences}).json()
        assert [t["text"] for t in answer["translations"]] == expected
        one = httpx.post(url + "/v1/translate", json={"model": "limited", "text": sentences, "beam_size": 1}).json()
    assert main(["translate", str(folder), *sentences, "--beam-size", "1"]) == 0
    assert [t["text"] for t in one["translations"]] == capsys.readouterr().out.splitlines()


def test_returned_attention_is_the_explicit_paths(served):
    from nanoformer.viz.attention import extract_attention

    url, models, _ = served
    translator = models["translator"]
    body = {"model": "translator", "text": ["ein mann geht", "hund rot"], "beam_size": 1, "return_attention": True}
    entries = httpx.post(url + "/v1/translate", json=body).json()["translations"]
    everything = httpx.post(url + "/v1/translate", json={**body, "attention_layers": "all", "attention_heads": "all"})
    for entry, full in zip(entries, everything.json()["translations"]):
        weights = torch.tensor(entry["attention"], dtype=torch.float64)
        assert torch.allclose(weights.sum(-1), torch.ones(weights.shape[0], dtype=torch.float64), atol=1e-5)
        source = entry["source_tokens"]
        reference = extract_attention(translator.model, translator.tokenizer, body["text"][entries.index(entry)],
                                      target=entry["text"]).get("cross")
        assert reference.key_tokens == source and reference.query_tokens == entry["target_tokens"]
        assert torch.allclose(weights, reference.weights[-1].mean(0).double(), atol=1e-6)
        assert torch.allclose(torch.tensor(full["attention"], dtype=torch.float64), reference.weights.double(), atol=1e-6)
        assert weights.shape == (len(entry["target_tokens"]), len(source)) and weights.std() > 0.01


def test_concurrent_translations_batch_and_equal_sequential_ones(served):
    url, _, _ = served
    words = ["ein", "mann", "hund", "rot", "blau", "geht", "läuft", "katze", "groß", "klein"]
    sentences = [" ".join(words[(i * 3 + j) % 10] for j in range(2 + i % 4)) for i in range(16)]
    sequential = [httpx.post(url + "/v1/translate", json={"model": "translator", "text": s, "beam_size": 4}).json()
                  ["translations"][0]["text"] for s in sentences]
    jobs, batches = metric(url, "nanoformer_jobs_total", model="translator"), \
        metric(url, "nanoformer_batches_total", model="translator")
    barrier = threading.Barrier(16)

    def one(sentence: str) -> str:
        barrier.wait()
        answer = httpx.post(url + "/v1/translate", json={"model": "translator", "text": sentence, "beam_size": 4},
                            timeout=60)
        return answer.json()["translations"][0]["text"]

    with ThreadPoolExecutor(16) as pool:
        together = list(pool.map(one, sentences))
    assert together == sequential
    ran_jobs = metric(url, "nanoformer_jobs_total", model="translator") - jobs
    ran_batches = metric(url, "nanoformer_batches_total", model="translator") - batches
    assert ran_jobs == 16 and ran_batches < 16


# --------------------------------------------------------------------------- encoders


def test_fill_mask_embeddings_and_classify_equal_the_library(served, client):
    from nanoformer.data.classification import encode_example, pad_batch
    from nanoformer.evaluation.classification import predict
    from nanoformer.evaluation.mlm import fill_mask

    url, models, _ = served
    bert, sentiment = models["bert"], models["sentiment"]
    text = "나는 [MASK]교에 간다"
    answer = httpx.post(url + "/v1/fill-mask", json={"model": "bert", "text": text, "top_k": 4}).json()
    expected = fill_mask(bert.model, bert.tokenizer, text, 4)[0]
    got = answer["results"][0]["masks"][0]
    assert [c["token_id"] for c in got] == [c.token_id for c in expected]
    assert [c["probability"] for c in got] == pytest.approx([c.probability for c in expected], abs=1e-6)

    sentences = ["I go to school.", "The cat sat on the mat."]
    vectors = [e.embedding for e in client.embeddings.create(model="bert", input=sentences).data]  # base64 on the wire
    floats = httpx.post(url + "/v1/embeddings", json={"model": "bert", "input": sentences}).json()["data"]
    batch = pad_batch([encode_example(bert.tokenizer, s, None, 64) for s in sentences], bert.tokenizer.pad_id)
    reference = bert.model.embed(batch["input_ids"], batch["attention_mask"]).detach().numpy()
    assert np.allclose(np.array(vectors), reference, atol=1e-6)
    assert np.allclose(np.array([f["embedding"] for f in floats]), reference, atol=1e-6)
    raw = httpx.post(url + "/v1/embeddings", json={"model": "bert", "input": "x", "encoding_format": "base64"}).json()
    assert np.frombuffer(base64.b64decode(raw["data"][0]["embedding"]), "<f4").shape == (32,)

    result = httpx.post(url + "/v1/classify", json={"model": "sentiment", "text": sentences}).json()["results"]
    batch = pad_batch([encode_example(sentiment.tokenizer, s, None, 64) for s in sentences], 0)
    batch.pop("token_type_ids")
    probs, _ = predict(sentiment.model, [batch])
    for row, expected_row in zip(result, probs.tolist()):
        assert list(row["probabilities"].values()) == pytest.approx(expected_row, abs=1e-6)
        assert row["label"] == ["negative", "positive"][int(np.argmax(expected_row))]


def test_attention_route_for_every_family(served):
    url, models, _ = served
    for name, kinds in (("gpt", ["decoder_self"]), ("bert", ["encoder_self"]),
                        ("translator", ["encoder_self", "decoder_self", "cross"])):
        answer = httpx.post(url + "/v1/attention", json={"model": name, "text": "ein mann"}).json()
        assert [m["kind"] for m in answer["maps"]] == kinds
        for m in answer["maps"]:
            weights = torch.tensor(m["weights"])
            config = models[name].model.config
            assert weights.shape[:2] == (config.n_layers, config.n_heads) and torch.allclose(weights.sum(-1), torch.ones(weights.shape[:-1]),
                                                                   atol=1e-5)
    html = httpx.post(url + "/v1/attention", json={"model": "gpt", "text": "<b>x</b>", "format": "html"})
    assert html.headers["content-type"].startswith("text/html") and "<b>x</b>" not in html.text


# --------------------------------------------------------------------------- refusals


def error_of(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    return error


def test_bad_requests_are_json_errors_naming_the_field(served):
    url, _, _ = served
    post = lambda body, path="/v1/completions", **kw: httpx.post(url + path, content=body, **kw)  # noqa: E731
    assert "JSON" in error_of(post(b'{"model": "gpt", '), 400)["message"]
    assert "UTF-8" in error_of(post(b'{"model": "gpt", "prompt": "\xff"}'), 400)["message"]
    assert error_of(post(b"[1, 2]"), 400)["code"] == "invalid_json"
    for body, param in (({"model": "gpt"}, "prompt"), ({"prompt": "x"}, "model"),
                        ({"model": "gpt", "prompt": 5}, "prompt"), ({"model": "gpt", "prompt": ["a", 3]}, "prompt[1]"),
                        ({"model": "gpt", "prompt": "x", "max_tokens": -1}, "max_tokens"),
                        ({"model": "gpt", "prompt": "x", "max_tokens": "5"}, "max_tokens"),
                        ({"model": "gpt", "prompt": "x", "max_tokens": 10 ** 6}, "max_tokens"),
                        ({"model": "gpt", "prompt": "x", "temperature": -1}, "temperature"),
                        ({"model": "gpt", "prompt": []}, "prompt")):
        assert error_of(post(json.dumps(body).encode()), 400)["param"] == param, body
    assert "1 to 63" in error_of(post(b'{"model": "gpt", "prompt": "x", "max_tokens": 999}'), 400)["message"]
    unknown = error_of(post(b'{"model": "nope", "prompt": "x"}'), 404)
    assert "gpt" in unknown["message"] and "translator" in unknown["message"]
    assert error_of(post(b'{"model": "translator", "prompt": "x"}'), 400)["code"] == "wrong_model_family"
    assert error_of(post(b'{"model": "bert", "text": "no mask here"}', "/v1/fill-mask"), 400)["param"] == "text[0]"
    assert error_of(post(b'{"model": "bert", "text": "x"}', "/v1/classify"), 400)["param"] == "model"
    assert error_of(httpx.get(url + "/nowhere"), 404)["code"] == "not_found"
    assert error_of(httpx.delete(url + "/v1/models"), 405)["code"] == "method_not_allowed"
    assert error_of(post(b"x" * (1 << 20 + 1)), 413)["code"] == "body_too_large"
    assert httpx.get(url + "/health").json()["status"] == "ok"


def test_empty_and_overlong_inputs(served):
    url, _, _ = served
    empty = httpx.post(url + "/v1/completions", json={"model": "gpt", "prompt": "", "max_tokens": 4, "temperature": 0})
    assert empty.status_code == 200 and empty.json()["usage"]["prompt_tokens"] == 1  # starts from BOS
    translated = httpx.post(url + "/v1/translate", json={"model": "translator", "text": ["", "ein mann"]}).json()
    assert [t["text"] for t in translated["translations"]] == ["", "a man"]
    long = "ein mann geht " * 20
    cut = httpx.post(url + "/v1/translate", json={"model": "translator", "text": long, "beam_size": 1}).json()
    assert "truncated" in cut["warnings"][0]
    assert error_of(httpx.post(url + "/v1/translate", json={"model": "translator", "text": long, "truncate": False}),
                    400)["code"] == "context_length_exceeded"
    embedded = httpx.post(url + "/v1/embeddings", json={"model": "bert", "input": "abc " * 40}).json()
    assert "cut to the model's 64" in embedded["warnings"][0]
    assert error_of(httpx.post(url + "/v1/classify", json={"model": "sentiment", "text": "abc " * 40,
                                                           "truncate": False}), 400)["param"] == "text"


def make_server(checkpoints, names=("translator",), **settings):
    models = load_models([str(checkpoints[n]) for n in names], list(names))
    return LiveServer(create_app(models, ServeSettings(**settings)))


def test_api_key_guards_every_route_but_health(checkpoints):
    with make_server(checkpoints, api_key="s3cret") as url:
        assert httpx.get(url + "/health").status_code == 200
        for path in ("/v1/models", "/", "/metrics"):
            assert error_of(httpx.get(url + path), 401)["code"] == "invalid_api_key"
        assert "wrong" in error_of(httpx.get(url + "/v1/models", headers={"Authorization": "Bearer nope"}), 401)["message"]
        assert httpx.get(url + "/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(url + "/", auth=("any", "s3cret")).status_code == 200  # a browser's Basic prompt
        assert httpx.get(url + "/").headers["www-authenticate"].startswith("Basic")
        client = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
        assert [m.id for m in client.models.list().data] == ["translator"]


def test_full_queue_is_429_and_a_slow_request_504(checkpoints):
    body = {"model": "translator", "text": "ein mann geht", "beam_size": 1}
    with make_server(checkpoints, max_queue=1, batch_wait=1.0) as url:
        with ThreadPoolExecutor(1) as pool:
            first = pool.submit(httpx.post, url + "/v1/translate", json=body, timeout=30)
            time.sleep(0.3)  # the first request waits 1 s in the queue for others to join its batch
            refused = httpx.post(url + "/v1/translate", json={**body, "beam_size": 2})
            assert error_of(refused, 429)["code"] == "queue_full" and refused.headers["retry-after"] == "1"
            assert first.result().status_code == 200
    with make_server(checkpoints, timeout=0.3, batch_wait=1.0) as url:
        assert error_of(httpx.post(url + "/v1/translate", json=body, timeout=30), 504)["code"] == "timeout"


def test_a_client_that_leaves_is_not_served(checkpoints):
    body = {"model": "translator", "text": "ein mann geht", "beam_size": 1}
    with make_server(checkpoints, batch_wait=1.0) as url:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(url + "/v1/translate", json=body, timeout=0.3)
        time.sleep(1.5)
        assert metric(url, "nanoformer_cancelled_total", model="translator", reason="disconnected") == 1
        assert metric(url, "nanoformer_jobs_total", model="translator") == 0  # its batch never ran
        assert httpx.post(url + "/v1/translate", json=body).status_code == 200


def test_two_workers_run_batches_at_once_and_stay_exact(checkpoints):
    words = ["ein", "mann", "hund", "rot", "blau", "geht", "läuft", "katze", "groß", "klein"]
    sentences = [" ".join(words[(i * 7 + j) % 10] for j in range(2 + i % 3)) for i in range(12)]
    with make_server(checkpoints, names=("translator", "gpt"), workers=2, batch_wait=0.0) as url:
        sequential = [httpx.post(url + "/v1/translate", json={"model": "translator", "text": s, "beam_size": 2})
                      .json()["translations"][0]["text"] for s in sentences]
        completions = [httpx.post(url + "/v1/completions", json={"model": "gpt", "prompt": s, "max_tokens": 12,
                                                                  "temperature": 0}).json()["choices"][0]["text"]
                       for s in ("The quick", "I go", "나는")]

        def translate(sentence: str) -> str:
            return httpx.post(url + "/v1/translate", json={"model": "translator", "text": sentence, "beam_size": 2},
                              timeout=60).json()["translations"][0]["text"]

        def complete(prompt: str) -> str:
            return httpx.post(url + "/v1/completions", json={"model": "gpt", "prompt": prompt, "max_tokens": 12,
                                                             "temperature": 0}, timeout=60).json()["choices"][0]["text"]

        with ThreadPoolExecutor(16) as pool:
            together = list(pool.map(translate, sentences))
            generated = list(pool.map(complete, ["The quick", "I go", "나는"] * 3))
    assert together == sequential
    assert generated == completions * 3
