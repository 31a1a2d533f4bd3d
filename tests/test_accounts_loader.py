"""`jobs/load_accounts.py --csv`: upsert by user_id into the contract's accounts table."""

from __future__ import annotations

import subprocess
import sys

import pytest

from recsys.sources.accounts import TABLE, read_accounts_csv, upsert_accounts
from recsys.stores import postgres
from tests.conftest import CONTRACTS_DIR, ROOT

HEADER = "user_id,full_name,email,date_of_birth,gender,latitude,longitude,country_code,signup_at\n"


@pytest.fixture
def empty_accounts(cfg):
    postgres.execute(cfg.postgres, f"DROP TABLE IF EXISTS {TABLE}")
    return cfg


def _rows(cfg) -> list[tuple]:
    with postgres.connect(cfg.postgres) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT user_id, email, date_of_birth::text, latitude, country_code, updated_at FROM {TABLE}"
                    " ORDER BY user_id")
        return cur.fetchall()


def test_the_packaged_ddl_is_the_contract(empty_accounts):
    from recsys.sources.accounts import accounts_ddl

    assert accounts_ddl() == (CONTRACTS_DIR / "accounts.sql").read_text()


def test_csv_rows_are_inserted_then_updated_by_user_id(empty_accounts, tmp_path):
    cfg = empty_accounts
    first = tmp_path / "a.csv"
    first.write_text(HEADER + "1,Ann Lee,ann@example.com,1990-02-03,f,40.7,-74.0,US,2024-01-01T00:00:00Z\n"
                              "2,,,,,,,,2024-02-01T00:00:00Z\n")
    assert upsert_accounts(cfg.postgres, read_accounts_csv(first)) == 2
    before = _rows(cfg)
    assert [r[:5] for r in before] == [("1", "ann@example.com", "1990-02-03", 40.7, "US"),
                                       ("2", None, None, None, None)]
    second = tmp_path / "b.csv"
    second.write_text(HEADER + "2,Bo Chen,bo@example.com,,m,,,SE,2024-02-01T00:00:00Z\n")
    assert upsert_accounts(cfg.postgres, read_accounts_csv(second)) == 1
    after = _rows(cfg)
    assert len(after) == 2 and after[0] == before[0]
    assert after[1][:5] == ("2", "bo@example.com", None, None, "SE") and after[1][5] > before[1][5]


def test_the_job_loads_a_csv_and_refuses_a_bad_one(empty_accounts, tmp_path):
    good = tmp_path / "good.csv"
    good.write_text(HEADER + "7,,,,,,,,2024-01-01T00:00:00Z\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,nickname,signup_at\n7,x,2024-01-01\n")

    def run(path):
        return subprocess.run([sys.executable, "jobs/load_accounts.py", "--env", "test", "--csv", str(path)],
                              cwd=ROOT, capture_output=True, text=True, check=False)

    ok = run(good)
    assert ok.returncode == 0 and "1 rows upserted" in ok.stdout
    refused = run(bad)
    assert refused.returncode == 1
    assert "unknown: ['nickname']" in refused.stderr
    assert len(_rows(empty_accounts)) == 1
