"""`charstream generate --samples N [--json]`: sample i is `charstream generate --random-seed` its seed."""
import json

import pytest
from click.testing import CliRunner

import charstream
from charstream.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, shakespeare):
    path = tmp_path_factory.mktemp("samples") / "m.npz"
    for cell in ("lstm",):
        m = charstream.Model(sorted(set(shakespeare[:4000])), hidden_size=16, seed=1, cell=cell)
        list(charstream.Trainer(m).train([shakespeare[:4000]]))
        m.save(path)
    return path


def one(path, seed, *opts):
    r = run("generate", "--model", path, "--seed", "To be", "--length", 150, "--random-seed", seed, *opts)
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("opts", [(), ("--temperature", 0.7, "--top-k", 5), ("--top-p", 0.8)])
def test_json_samples_are_generate_with_their_seeds(trained, opts):
    r = run("generate", "--model", trained, "--seed", "To be", "--length", 150, "--samples", 5, "--json",
            "--random-seed", 30, *opts)
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert [(o["index"], o["random_seed"]) for o in lines] == [(i, 30 + i) for i in range(5)]
    assert all(o["text"] == one(trained, o["random_seed"], *opts) for o in lines)
    assert len({o["text"] for o in lines}) == 5


def test_plain_samples_are_headed_and_drawn_seeds_are_shown(trained):
    r = run("generate", "--model", trained, "--seed", "To be", "--length", 150, "--samples", 3)
    assert r.exit_code == 0, r.output
    parts = r.stdout.split("==> sample ")
    assert parts[0] == "" and len(parts) == 4
    for i, part in enumerate(parts[1:]):
        head, text = part.split(" <==\n", 1)
        index, seed = head.split(", random seed ")
        assert int(index) == i
        assert text == one(trained, int(seed)) + "\n" + ("\n" if i < 2 else "")
    seeds = [int(p.split(" <==")[0].split()[-1]) for p in parts[1:]]
    assert seeds == [seeds[0] + i for i in range(3)]


def test_samples_bad_input(trained):
    r = run("generate", "--model", trained, "--samples", 2)
    assert r.exit_code == 2 and "--samples needs --length" in r.output
    r = run("generate", "--model", trained, "--json", "--length", 3)
    assert r.exit_code == 2 and "--json needs --samples N" in r.output
    r = run("generate", "--model", trained, "--samples", 0, "--length", 3)
    assert r.exit_code == 2 and "Invalid value for '--samples'" in r.output
    r = run("generate", "--model", trained, "--samples", 2, "--length", 0, "--json", "--random-seed", 1)
    assert r.exit_code == 0
    assert [json.loads(x)["text"] for x in r.stdout.splitlines()] == ["", ""]
