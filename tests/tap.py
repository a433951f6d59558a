"""The one ok / not ok reporter of the Python test files. tests/run_all.sh counts these lines."""
import sys

failed = 0  # not-ok lines printed so far


def check(name, cond, why=""):
    """Prints "ok - name" if cond holds, else "not ok - name: why" (on one line). Returns cond."""
    global failed
    if cond:
        print(f"ok - {name}")
    else:
        failed += 1
        print(f"not ok - {name}: {' | '.join(str(why).splitlines())}")
    sys.stdout.flush()
    return cond


def report(name, problem=None):
    """check() for callers that describe the failure rather than test a condition: ok if no problem."""
    return check(name, not problem, problem)


def exit_status():
    """Prints the number of failures as a comment and returns the process exit status."""
    print(f"# {failed} failed")
    return 1 if failed else 0
