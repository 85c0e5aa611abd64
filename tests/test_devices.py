"""`devices.cpu_name`: the CPU kind that benchmarks record beside their times."""

from __future__ import annotations

import platform

from stylegan_transfer.devices import cpu_name


def test_cpu_name_reads_the_model_name_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t\t: avx2\n\n"
        "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n"
    )
    assert cpu_name(cpuinfo) == "AMD EPYC 7B13"


def test_cpu_name_without_cpuinfo_falls_back_to_platform(tmp_path):
    expected = platform.processor() or platform.machine() or "unknown CPU"
    assert cpu_name(tmp_path / "missing") == expected
    (tmp_path / "empty").write_text("processor\t: 0\nmodel name\t:   \n")  # a blank name is no name
    assert cpu_name(tmp_path / "empty") == expected
