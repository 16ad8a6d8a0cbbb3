"""The [distributed] profile section: every key validated with file:line and did-you-mean,
and the cross-key rules."""

from __future__ import annotations

import pytest

from workbench.profile import DistributedSection, ProfileError, load_profile

BASE = '[model]\nname_or_path = "gpt2"\n\n[data]\ntrain = "a.jsonl"\n\n[distributed]\n'
FIRST = BASE.count("\n") + 1  # the line of the first key under [distributed]


def issues(tmp_path, body: str) -> list[str]:
    path = tmp_path / "p.toml"
    path.write_text(BASE + body, encoding="utf-8")
    with pytest.raises(ProfileError) as err:
        load_profile(path)
    return [str(i) for i in err.value.issues]


def load(tmp_path, body: str):
    path = tmp_path / "p.toml"
    path.write_text(BASE + body, encoding="utf-8")
    return load_profile(path)


def test_defaults_are_todays_behaviour():
    d = DistributedSection()
    assert (d.gpus, d.strategy, d.processes, d.nnodes, d.node_rank) == ("auto", "auto", 1, 1, 0)
    assert load_profile("demo").distributed == d


def test_valid_values(tmp_path):
    p = load(tmp_path, 'gpus = "0, 3,5"\nstrategy = "deepspeed"\nzero_stage = 2\n'
                       'cpu_offload = true\nnnodes = 2\nnode_rank = 1\n'
                       'master_addr = "10.0.0.1"\nmaster_port = 29400\n')
    d = p.distributed
    assert d.gpus == "0,3,5" and d.strategy == "deepspeed" and d.zero_stage == 2
    assert d.cpu_offload and (d.nnodes, d.node_rank) == (2, 1) and d.master_port == 29400
    assert load(tmp_path, "gpus = 4\n").distributed.gpus == 4


@pytest.mark.parametrize("body,needle", [
    ('gpus = 0\n', 'distributed.gpus: expected "auto", a number of GPUs'),
    ('gpus = "all"\n', 'got "all"'),
    ('gpus = "1,1"\n', "a GPU is listed twice"),
    ('gpus = "atuo"\n', 'did you mean "auto"?'),
    ('strategy = "fdsp"\n', 'did you mean "fsdp"?'),
    ('zero_stage = 1\n', "distributed.zero_stage: expected 2 or 3"),
    ('cpu_offload = "yes"\n', "distributed.cpu_offload: expected true or false"),
    ('processes = 0\n', "distributed.processes: expected an integer >= 1"),
    ('nnodes = 0\n', "distributed.nnodes: expected an integer >= 1"),
    ('node_rank = -1\n', "distributed.node_rank: expected an integer >= 0"),
    ('master_addr = ""\n', "distributed.master_addr: expected a host name"),
    ('master_port = 70000\n', "distributed.master_port: expected a TCP port in [1, 65535]"),
    ('procesess = 2\n', "distributed.procesess: unknown key; did you mean 'processes'?"),
])
def test_each_key_is_checked_with_its_line(tmp_path, body, needle):
    found = issues(tmp_path, body)
    assert len(found) == 1, found
    assert found[0].startswith(f"{tmp_path / 'p.toml'}:{FIRST}: "), found[0]
    assert needle in found[0]


def test_cross_checks(tmp_path):
    found = "\n".join(issues(tmp_path, "nnodes = 2\nnode_rank = 2\n"))
    assert "must be below nnodes (2)" in found
    found = "\n".join(issues(tmp_path, 'cpu_offload = true\nstrategy = "ddp"\n'))
    assert "cpu_offload needs strategy" in found
    found = "\n".join(issues(tmp_path, 'processes = 2\nstrategy = "fsdp"\n'))
    assert "needs GPUs" in found
    path = tmp_path / "c.toml"
    path.write_text(BASE.replace("[distributed]\n", '[train]\ndevice = "cuda"\n[distributed]\n')
                    + "processes = 2\n")
    with pytest.raises(ProfileError, match="processes is for CPU runs"):
        load_profile(path)


def test_overrides_from_the_command_line():
    p = load_profile("demo", ["distributed.processes=2", 'distributed.strategy="ddp"'])
    assert p.distributed.processes == 2 and p.distributed.strategy == "ddp"
    with pytest.raises(ProfileError, match=r"--set distributed.gpus: expected"):
        load_profile("demo", ["distributed.gpus=-1"])


def test_misplaced_key_points_at_its_section(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text(BASE.replace("[distributed]\n", "[train]\nnnodes = 2\n"))
    with pytest.raises(ProfileError, match=r"'nnodes' belongs under \[distributed\]"):
        load_profile(path)
