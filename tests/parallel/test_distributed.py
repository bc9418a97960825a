"""The multi-process flags and the start-up roll call, in-process.

The roll call (vidjax/parallel/distributed.py) is plain sockets, so its
cases run here in threads, in a second or two each: a late coordinator,
a process that never comes, two processes with one id, disagreeing
--num_processes, a port already taken. Then two small real processes
(tests/parallel/gather_forever.py), one killed mid-run. The runs with real
training are in test_multihost.py.
"""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from vidjax.errors import VidjaxError
from vidjax.parallel import distributed

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


@pytest.mark.parametrize('coordinator, num_processes, process_id, message', [
    ('h:1', 2, 2, '--process_id=2 is outside 0..1 (--num_processes=2)'),
    ('h:1', 2, -1, '--process_id=-1 is outside 0..1 (--num_processes=2)'),
    ('h:1', 0, 0, '--num_processes=0 must be at least 1'),
    ('h:1', None, 0, '--coordinator_address needs --num_processes and '
     '--process_id'),
    (None, 2, 0, '--num_processes and --process_id need '
     '--coordinator_address (TPU VMs need none of them)'),
    ('host', 2, 0, "--coordinator_address='host' must be HOST:PORT, e.g. "
     '10.0.0.2:8476'),
    (':8476', 2, 0, "--coordinator_address=':8476' must be HOST:PORT, e.g. "
     '10.0.0.2:8476'),
    ('host:port', 2, 0, "--coordinator_address='host:port': the port must "
     'be a number in 1-65535 (HOST:PORT, e.g. 10.0.0.2:8476)'),
    ('host:70000', 2, 0, "--coordinator_address='host:70000': the port must "
     'be a number in 1-65535 (HOST:PORT, e.g. 10.0.0.2:8476)'),
    ('host:0', 2, 0, "--coordinator_address='host:0': the port must be a "
     'number in 1-65535 (HOST:PORT, e.g. 10.0.0.2:8476)'),
])
def test_bad_flags_are_one_line(coordinator, num_processes, process_id,
                                message):
  with pytest.raises(VidjaxError) as e:
    distributed.check_flags(coordinator, num_processes, process_id, 600)
  assert str(e.value) == message


def test_a_timeout_must_be_positive():
  with pytest.raises(VidjaxError, match=r'^--peer_timeout_s=0 must be '
                     'positive$'):
    distributed.check_flags(None, None, None, 0)


@pytest.mark.parametrize('address', ['10.0.0.2:8476', 'host.example:1',
                                     '[::1]:65535'])
def test_good_flags_pass(address):
  distributed.check_flags(address, 4, 3, 600)
  assert distributed.parse_address(address)[1] in (8476, 1, 65535)


def test_bad_flags_answer_before_jax_loads():
  """The command line says it in one line, without importing TF or JAX."""
  started = time.monotonic()
  proc = subprocess.run(
      [sys.executable, '-X', 'importtime', '-m', 'vidjax.main',
       '--config=configs/demo.py', '--workdir=/nonexistent',
       '--coordinator_address=127.0.0.1:1', '--num_processes=2',
       '--process_id=2'], cwd=REPO, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=REPO), timeout=120)
  lines = [l for l in proc.stderr.splitlines()
           if not l.startswith('import time:')]
  imported = {l.split('|')[-1].strip() for l in proc.stderr.splitlines()
              if l.startswith('import time:')}
  assert proc.returncode == 1
  assert lines == ['vidjax: error: --process_id=2 is outside 0..1 '
                   '(--num_processes=2)'], proc.stderr[-2000:]
  assert 'jax' not in imported and 'tensorflow' not in imported
  assert time.monotonic() - started < 60


# ------------------------------------------------------------- Roll call.


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


class Process(threading.Thread):
  """One side of the roll call, in a thread: its error, if any."""

  def __init__(self, port, num_processes, process_id, timeout_s=10.0):
    super().__init__(daemon=True)
    self.args = port, num_processes, process_id, timeout_s
    self.error = None
    self.done = False
    self.start()

  def run(self):
    port, n, pid, timeout_s = self.args
    address = f'127.0.0.1:{port}'
    try:
      if pid == 0:
        distributed._host_roll_call(address, port, n, timeout_s)
      else:
        distributed._join_roll_call('127.0.0.1', port, address, n, pid,
                                    timeout_s)
    except VidjaxError as e:
      self.error = str(e)
    self.done = True


@pytest.fixture(autouse=True)
def often(monkeypatch):
  monkeypatch.setattr(distributed, 'PROGRESS_EVERY_S', 0.5)


def test_everyone_meets_even_when_the_coordinator_is_last(capfd):
  port = free_port()
  peers = [Process(port, 3, 1), Process(port, 3, 2)]
  time.sleep(1.2)  # They wait, saying for whom.
  host = Process(port, 3, 0)
  for p in (host, *peers):
    p.join(10)
    assert p.done and p.error is None, p.error
  err = capfd.readouterr().err
  assert ('vidjax: process 1 waiting for process 0 of 3 to start (the '
          f'coordinator 127.0.0.1:{port}: Connection refused) (') in err, err
  # The port is free again, for JAX's service.
  with socket.create_server(('', port)):
    pass


def test_the_coordinator_names_who_never_came(capfd):
  port = free_port()
  host = Process(port, 4, 0, timeout_s=2)
  peer = Process(port, 4, 2, timeout_s=30)
  host.join(10)
  peer.join(10)
  expected = ('processes 1, 3 of 4 did not start within 2 s '
              '(--peer_timeout_s); this is process 0')
  assert host.error == expected
  # The peer that came ends with the coordinator, with the same line.
  assert peer.done and peer.error == expected
  err = capfd.readouterr().err
  assert 'vidjax: process 0 waiting for processes 1, 3 of 4 to start (' in err
  assert 'vidjax: process 2 waiting for processes 1, 3 of 4 to start (' in err


def test_a_coordinator_that_never_comes():
  port = free_port()
  peer = Process(port, 2, 1, timeout_s=1.5)
  peer.join(10)
  assert peer.error == (
      'process 0 of 2 did not start within 1.5 s (--peer_timeout_s); this '
      f'is process 1; the coordinator 127.0.0.1:{port}: Connection refused')


def test_two_processes_with_one_id():
  port = free_port()
  host = Process(port, 3, 0)
  first = Process(port, 3, 1)
  time.sleep(1)
  second = Process(port, 3, 1)
  second.join(10)
  assert second.error == ('another process already has --process_id=1; '
                          'each process needs its own id')
  last = Process(port, 3, 2)  # The run goes on with the first one.
  for p in (host, first, last):
    p.join(10)
    assert p.done and p.error is None, p.error


def test_processes_that_disagree_on_their_number():
  port = free_port()
  host = Process(port, 2, 0, timeout_s=3)
  stray = Process(port, 3, 1)
  stray.join(10)
  assert stray.error == ('process 1 has --num_processes=3 but the '
                         'coordinator (process 0) has --num_processes=2')
  host.join(10)
  assert host.error.startswith('process 1 of 2 did not start within 3 s')


def test_a_coordinator_port_in_use():
  with socket.create_server(('', 0)) as taken:
    port = taken.getsockname()[1]
    host = Process(port, 2, 0)
    host.join(10)
  assert host.error == (
      f'cannot listen on the coordinator port {port} (--coordinator_address='
      f'127.0.0.1:{port}): Address already in use; is another run (or '
      'program) still using it?')


def test_a_peer_that_leaves_is_missing_again():
  port = free_port()
  host = Process(port, 3, 0, timeout_s=3)
  time.sleep(0.5)
  with socket.create_connection(('127.0.0.1', port)) as conn:
    conn.sendall(b'vidjax-roll-call 3 1\n')
    time.sleep(0.5)
  # Gone before the others came: the coordinator waits for it again.
  host.join(10)
  assert host.error == ('processes 1, 2 of 3 did not start within 3 s '
                        '(--peer_timeout_s); this is process 0')


# ------------------------------------------------------------ Lost peer.


def test_a_peer_that_dies_mid_run_ends_the_other_in_one_line(tmp_path):
  """Process 1 SIGKILLed between collectives: process 0 fails its next
  all-gather (gloo: connection closed) and says so in one line at once,
  rather than a traceback and then JAX's shutdown waiting for the dead.
  """
  port = free_port()
  script = os.path.join(REPO, 'tests', 'parallel', 'gather_forever.py')
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  procs = []
  for process_id in (0, 1):
    out = open(tmp_path / f'{process_id}.out', 'w+')
    procs.append(subprocess.Popen(
        [sys.executable, script, str(port), '2', str(process_id)], cwd=REPO,
        env=env, stdout=out, stderr=subprocess.STDOUT, text=True))
    procs[-1].out = out
  deadline = time.monotonic() + 180
  while 'gathered 3\n' not in (tmp_path / '1.out').read_text():
    assert time.monotonic() < deadline and procs[1].poll() is None, (
        (tmp_path / '1.out').read_text())
    time.sleep(0.2)
  procs[1].kill()
  killed = time.monotonic()
  rc = procs[0].wait(timeout=120)
  seconds = time.monotonic() - killed
  text = (tmp_path / '0.out').read_text()
  lines = text.strip().splitlines()
  assert rc == 1, text
  assert 'Traceback' not in text, text
  assert [l for l in lines if l.startswith('vidjax: error:')] == lines[-1:]
  assert lines[-1].startswith(
      'vidjax: error: lost contact with another of the 2 processes (it '
      'stopped or died; its own log says why); this is process 0. JAX said: '
      'UNKNOWN: Gloo AllGather failed: '), lines[-1]
  assert seconds < 45, seconds  # gloo's 30 s at most; not JAX's 300 s.
  for p in procs:
    p.out.close()
