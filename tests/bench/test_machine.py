"""bench.machine: the CPU a run's figures come from is recorded with them."""

from __future__ import annotations

from bench import machine

CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9B14
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
model name\t: AMD EPYC 9B14
flags\t\t: fpu vme sse sse2 avx avx2 fma avx512f avx512bw avx512_vnni
"""


def test_the_cpu_model_and_its_vector_flags():
    assert machine.cpu(CPUINFO) == {"model": "AMD EPYC 9B14",
                                    "vector_flags": ["avx2", "avx512f", "avx512_vnni"]}


def test_an_avx2_only_host_and_unreadable_fields():
    avx2 = CPUINFO.replace(" avx512f avx512bw avx512_vnni", "")
    assert machine.cpu(avx2)["vector_flags"] == ["avx2"]
    assert machine.cpu("") == {"model": "", "vector_flags": []}


def test_this_machine():
    here = machine.cpu()
    assert isinstance(here["model"], str) and set(here["vector_flags"]) <= set(machine.VECTOR_FLAGS)
