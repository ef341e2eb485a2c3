from pathlib import Path

from tally.config import Settings, deployed_environment


def test_the_command_line_reads_the_settings_the_functions_are_deployed_with(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TALLY_AGGREGATE_SHARDS=64\nTALLY_MAX_NAMES=300\n")
    (tmp_path / ".env.prod-app").write_text("#\nTALLY_MAX_NAMES=200\nTALLY_DEFAULT_MONTHLY_FREE_RUNS=7\n")

    env = deployed_environment("prod-app", environ={"TALLY_DEFAULT_MONTHLY_FREE_RUNS": "9"}, folder=tmp_path)
    settings = Settings.from_env(env)

    assert (settings.aggregate_shards, settings.max_names, settings.default_monthly_free_runs) == (64, 200, 9)


def test_without_a_project_only_the_shared_env_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TALLY_MAX_NAMES=300\n")
    (tmp_path / ".env.prod-app").write_text("TALLY_MAX_NAMES=200\n")

    env = deployed_environment(None, environ={}, folder=tmp_path)

    assert env == {"TALLY_MAX_NAMES": "300"}
