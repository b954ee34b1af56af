"""The README's two commands are the project's promise; keep them in step with CI."""

import re


def test_ci_runs_the_readme_test_command(repo):
    readme = (repo / "README.md").read_text()
    ci = (repo / ".ci" / "run").read_text()
    commands = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.S)
    assert len(commands) >= 2
    test_command = commands[1].strip()
    assert "pytest" in test_command
    assert test_command in ci.splitlines()


def test_readme_main_command_uses_bundled_data(repo):
    readme = (repo / "README.md").read_text()
    main = re.findall(r"```bash\n(.+?)\n```", readme, flags=re.S)[0]
    assert "mmats walkforward" in main and "pip install" in main
