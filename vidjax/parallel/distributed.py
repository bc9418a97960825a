"""Multi-process start-up that waits for late hosts and names the missing.

A run of N processes (`--coordinator_address=HOST:PORT --num_processes=N
--process_id=I`) meets twice before it trains, each time with one timeout
(`--peer_timeout_s`, default 600 s: a pod's hosts boot, pull and compile at
different speeds, and MaxText/PySlowFast users expect minutes, not seconds):

1. At start-up (`start`), a roll call on the coordinator's port, before
   `jax.distributed.initialize`. jax 0.10.2's `connect()` already waits for
   every process, but silently, and when its `initialization_timeout` ends
   it aborts the process from C++ (a `F... client.h` line and a stack
   trace), whichever side is late, the coordinator included. So process 0
   first listens on the coordinator's port itself; every other process
   connects (retrying while process 0 is not up), says its id and
   num_processes and waits. Process 0 tells them who is still missing and,
   once all are there, says "go", closes the port and starts JAX's
   service on it; then all of them connect to JAX, which takes seconds.
   The roll call also catches what JAX would not say clearly: two
   processes with the same `--process_id`, processes disagreeing on
   `--num_processes`, and a coordinator port already in use.
2. Before the first collective of training (`barrier`,
   `meet_before_first_call`): gloo, JAX's CPU collectives, gives each
   collective 30 s for the peers to join (gloo's default, not configurable
   through JAX 0.10.2), so a host that renders the dataset, restores or
   compiles more than 30 s slower killed the run with a gloo
   `CoordinationServiceError`. The barrier uses the coordination service's
   key-value store instead: each process sets `vidjax/arrived/<name>/<id>`
   and polls the directory, so it can say who is missing; the train step
   is compiled ahead (`lower().compile()`, which jit reuses) before the
   barrier, so after it every process goes straight to the collective.

While waiting, each process prints a line to stderr every PROGRESS_EVERY_S
("vidjax: process 0 waiting for process 1 of 2 to start (42 s of 600 s)").
When the timeout passes, it ends with one line naming the missing
processes and the timeout ("vidjax: error: process 1 of 2 did not start
within 600 s (--peer_timeout_s); this is process 0") and exit 1; a process
that arrives at a barrier the others gave up on says so instead of hanging.

A process that dies or stops mid-run (killed, out of memory, Ctrl-C on
one host) makes the others' next gloo collective fail ("Connection closed
by peer", or gloo's 30 s); they used to print a traceback and then wait in
JAX's shutdown (300 s) for the dead process. `start` installs an absl
exception handler (`_LostPeer`) that says one line instead and exits at
once. When the dead process is process 0, JAX's own error poller may abort
the survivors first (an `F... client.h:80` line): JAX 0.10.2's
`jax.distributed.initialize` takes no callback to replace it.

The timeout is a flag, not a config key: the start-up waits before any
config is loaded (and on a pod, the config file may be what a slow host is
still fetching).
"""
import atexit
import errno
import os
import select
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence

from absl import app

from vidjax.errors import VidjaxError

DEFAULT_TIMEOUT_S = 600.0
PROGRESS_EVERY_S = 15.0
_POLL_S = 0.5
_HELLO = 'vidjax-roll-call'
_FLAG = '--peer_timeout_s'

# The timeout `start` was given; barriers use it (library callers that
# initialise JAX themselves get the default).
_timeout_s = DEFAULT_TIMEOUT_S
_barrier_uses: dict[str, int] = {}
# Set when a barrier gave up: the process then exits without JAX's
# shutdown, which would wait (shutdown_timeout, 300 s) for the very
# processes that did not come.
_gave_up = False


def parse_address(address: str) -> tuple[str, int]:
  """(host, port) of HOST:PORT or [IPv6]:PORT; VidjaxError if malformed."""
  host, sep, port = address.rpartition(':')
  example = 'HOST:PORT, e.g. 10.0.0.2:8476'
  if not sep or not host or host in ('[]',):
    raise VidjaxError(f'--coordinator_address={address!r} must be {example}')
  if not port.isdigit() or not 0 < int(port) < 65536:
    raise VidjaxError(f'--coordinator_address={address!r}: the port must be '
                      f'a number in 1-65535 ({example})')
  if host.startswith('[') != host.endswith(']'):
    raise VidjaxError(f'--coordinator_address={address!r} must be {example}')
  return host.strip('[]'), int(port)


def check_flags(coordinator: str | None, num_processes: int | None,
                process_id: int | None, timeout_s: float):
  """The multi-process flags' errors, before anything heavy is imported."""
  if timeout_s <= 0:
    raise VidjaxError(f'{_FLAG}={timeout_s:g} must be positive')
  if coordinator is None:
    if num_processes is not None or process_id is not None:
      raise VidjaxError('--num_processes and --process_id need '
                        '--coordinator_address (TPU VMs need none of them)')
    return
  if num_processes is None or process_id is None:
    raise VidjaxError('--coordinator_address needs --num_processes and '
                      '--process_id')
  if num_processes < 1:
    raise VidjaxError(f'--num_processes={num_processes} must be at least 1')
  if not 0 <= process_id < num_processes:
    raise VidjaxError(f'--process_id={process_id} is outside 0..'
                      f'{num_processes - 1} (--num_processes={num_processes})')
  parse_address(coordinator)


def _names(ids: Sequence[int]) -> str:
  ids = sorted(ids)
  return (f'process {ids[0]}' if len(ids) == 1 else
          f'processes {", ".join(str(i) for i in ids)}')


def _missing_error(missing, num_processes, what, timeout_s, me,
                   detail='') -> VidjaxError:
  return VidjaxError(
      f'{_names(missing)} of {num_processes} did not {what} within '
      f'{timeout_s:g} s ({_FLAG}); this is process {me}{detail}')


class _Progress:
  """Prints who is missing every PROGRESS_EVERY_S while a wait lasts."""

  def __init__(self, me: int, num_processes: int, what: str,
               timeout_s: float):
    self._me, self._n, self._what = me, num_processes, what
    self.timeout_s = timeout_s
    self._start = time.monotonic()
    self._next = self._start + PROGRESS_EVERY_S

  @property
  def deadline(self) -> float:
    return self._start + self.timeout_s

  def __call__(self, missing: Sequence[int], detail: str = ''):
    now = time.monotonic()
    if now < self._next or not missing:
      return
    self._next = now + PROGRESS_EVERY_S
    print(f'vidjax: process {self._me} waiting for {_names(missing)} of '
          f'{self._n} to {self._what}{detail} ({now - self._start:.0f} s of '
          f'{self.timeout_s:g} s)', file=sys.stderr, flush=True)


# ------------------------------------------------------------- Roll call.


def _send(conn: socket.socket, line: str):
  try:
    conn.sendall(f'{line}\n'.encode())
  except OSError:
    pass  # A peer that left; the roll call notices when it reads.


def _listen(port: int, address: str) -> socket.socket:
  try:
    if socket.has_dualstack_ipv6():
      return socket.create_server(('', port), family=socket.AF_INET6,
                                  dualstack_ipv6=True)
    return socket.create_server(('', port))
  except OSError as e:
    hint = ('; is another run (or program) still using it?'
            if e.errno == errno.EADDRINUSE else '')
    # create_server's strerror adds the address tuple: say it plainly.
    reason = os.strerror(e.errno) if e.errno else str(e)
    raise VidjaxError(f'cannot listen on the coordinator port {port} '
                      f'(--coordinator_address={address}): '
                      f'{reason}{hint}') from None


def _host_roll_call(address: str, port: int, num_processes: int,
                    timeout_s: float):
  """Process 0: waits until every other process has said hello."""
  server = _listen(port, address)
  progress = _Progress(0, num_processes, 'start', timeout_s)
  present: dict[int, socket.socket] = {}
  buffers: dict[socket.socket, bytes] = {}
  told = None
  try:
    while True:
      missing = [i for i in range(1, num_processes) if i not in present]
      if not missing:
        for conn in present.values():
          _send(conn, 'go')
        return
      if missing != told:  # Peers print who is missing, too.
        for conn in present.values():
          _send(conn, 'missing ' + ','.join(map(str, missing)))
        told = missing
      progress(missing)
      if time.monotonic() > progress.deadline:
        error = _missing_error(missing, num_processes, 'start', timeout_s, 0)
        for conn in present.values():
          _send(conn, f'error {error}')
        raise error
      readable, _, _ = select.select([server, *buffers], [], [], _POLL_S)
      for sock in readable:
        if sock is server:
          conn, _ = server.accept()
          buffers[conn] = b''
          continue
        try:
          data = sock.recv(4096)
        except OSError:
          data = b''
        if not data:  # Gone (killed, or restarted): missing again.
          buffers.pop(sock)
          for i, conn in list(present.items()):
            if conn is sock:
              del present[i]
          sock.close()
          continue
        buffers[sock] += data
        if b'\n' in buffers[sock] and sock not in present.values():
          _welcome(sock, buffers[sock].split(b'\n', 1)[0], present,
                   num_processes, buffers)
  finally:
    for conn in buffers:
      conn.close()
    server.close()


def _welcome(sock, hello: bytes, present, num_processes, buffers):
  """Registers a peer's `vidjax-roll-call N I`, or turns it away."""
  words = hello.decode(errors='replace').split()
  if len(words) != 3 or words[0] != _HELLO or not all(
      w.lstrip('-').isdigit() for w in words[1:]):
    buffers.pop(sock)
    sock.close()  # Not one of ours (a probe, a port scanner): ignore it.
    return
  theirs, pid = int(words[1]), int(words[2])
  if theirs != num_processes:
    reason = (f'process {pid} has --num_processes={theirs} but the '
              f'coordinator (process 0) has --num_processes={num_processes}')
  elif pid in present:
    reason = (f'another process already has --process_id={pid}; each '
              'process needs its own id')
  elif not 0 < pid < num_processes:
    reason = f'--process_id={pid} is not 1..{num_processes - 1}'
  else:
    present[pid] = sock
    return
  print(f'vidjax: turned away a process: {reason}', file=sys.stderr,
        flush=True)
  _send(sock, f'error {reason}')
  buffers.pop(sock)
  sock.close()


def _join_roll_call(host: str, port: int, address: str, num_processes: int,
                    process_id: int, timeout_s: float):
  """Processes 1..N-1: waits for process 0's "go"."""
  progress = _Progress(process_id, num_processes, 'start', timeout_s)
  missing, reason = [0], 'not reachable yet'
  while True:
    left = progress.deadline - time.monotonic()
    if left <= 0:
      detail = (f'; the coordinator {address}: {reason}' if missing == [0]
                else '')
      raise _missing_error(missing, num_processes, 'start', timeout_s,
                           process_id, detail)
    try:
      conn = socket.create_connection((host, port), timeout=min(left, 10))
    except OSError as e:
      reason = e.strerror or str(e)
      progress([0], f' (the coordinator {address}: {reason})')
      time.sleep(min(1.0, max(left, 0)))
      continue
    with conn:
      conn.settimeout(_POLL_S)
      _send(conn, f'{_HELLO} {num_processes} {process_id}')
      answer = _await_go(conn, progress, num_processes, process_id)
    if answer is None:  # Process 0 went away (restarted?): try again.
      missing, reason = [0], 'closed the connection'
      continue
    return


def _await_go(conn, progress, num_processes, process_id) -> bool | None:
  """True on "go"; None if the coordinator closed; raises its errors."""
  buffer, missing = b'', list(range(num_processes))
  missing.remove(process_id)
  while True:
    if time.monotonic() > progress.deadline:
      raise _missing_error(missing, num_processes, 'start',
                           progress.timeout_s, process_id)
    progress(missing)
    try:
      data = conn.recv(4096)
    except TimeoutError:
      continue
    except OSError:
      return None
    if not data:
      return None
    buffer += data
    while b'\n' in buffer:
      line, buffer = buffer.split(b'\n', 1)
      word, _, rest = line.decode(errors='replace').partition(' ')
      if word == 'go':
        return True
      if word == 'missing':
        missing = [int(i) for i in rest.split(',') if i]
      elif word == 'error':
        raise VidjaxError(rest)
      else:
        raise VidjaxError(
            f'the coordinator port answered like no vidjax roll call '
            f'(another program there, or a run that started without this '
            f'process?); this is process {process_id}')


# ------------------------------------------------------------ Start-up.


def _watchdog(seconds: float, message: str) -> threading.Timer:
  """Ends the process with `message` if JAX's connect outlasts `seconds`.

  connect() blocks in C++ and, at its own timeout, aborts the process
  with a stack trace; this says one line first.
  """
  def fire():
    print(f'vidjax: error: {message}', file=sys.stderr, flush=True)
    os._exit(1)  # pylint: disable=protected-access
  timer = threading.Timer(seconds, fire)
  timer.daemon = True
  timer.start()
  return timer


def start(coordinator: str | None, num_processes: int | None,
          process_id: int | None, timeout_s: float = DEFAULT_TIMEOUT_S,
          *, tpu: bool = False):
  """jax.distributed.initialize, once every process has come (see above).

  Without a coordinator: TPU VMs (`tpu`) find their peers themselves, and
  anything else is one process.
  """
  global _timeout_s
  _timeout_s = timeout_s
  import jax  # pylint: disable=g-import-not-at-top
  if coordinator is None:
    if tpu:
      jax.distributed.initialize(initialization_timeout=int(timeout_s))
    return
  if not tpu:  # Collectives across CPU processes.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  host, port = parse_address(coordinator)
  began = time.monotonic()
  if num_processes > 1:
    if process_id == 0:
      _host_roll_call(coordinator, port, num_processes, timeout_s)
    else:
      _join_roll_call(host, port, coordinator, num_processes, process_id,
                      timeout_s)
  # Everyone is up: connecting takes seconds. Still, a process could die
  # in between; JAX's own timeout is set past ours so that ours speaks.
  left = max(timeout_s - (time.monotonic() - began), 60.0)
  timer = _watchdog(left, f'the {num_processes} processes met, but did not '
                    f'all connect to JAX\'s distributed service at '
                    f'{coordinator} within {left:.0f} s ({_FLAG}); this is '
                    f'process {process_id}')
  try:
    jax.distributed.initialize(coordinator, num_processes, process_id,
                               initialization_timeout=int(left) + 30)
    jax.devices()  # The backend's topology exchange, while all are here.
  finally:
    timer.cancel()
  # Registered after JAX's, so it runs before the client's destructor
  # (atexit is last-in, first-out; destructors come after).
  atexit.register(_exit_now_if_gave_up)
  if num_processes > 1:
    app.install_exception_handler(_LostPeer(process_id, num_processes))


def _exit_now_if_gave_up():
  if _gave_up:
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


class _LostPeer(app.ExceptionHandler):
  """absl's handler for a collective that failed because a peer is gone.

  A process that dies or stops mid-run (killed, out of memory, Ctrl-C)
  leaves the others in a gloo collective, which fails when the connection
  closes or after gloo's 30 s; JAX raises its runtime error, a traceback,
  and then JAX's shutdown would wait 300 s for the dead process. This says
  one line instead and exits at once (with --verbose, after the
  traceback).
  """

  _SIGNS = ('gloo', 'coordinationservice', 'connection closed by peer',
            'heartbeat')

  def __init__(self, process_id: int, num_processes: int):
    self._me, self._n = process_id, num_processes

  def wants(self, error: BaseException) -> bool:
    # JAX raises a ValueError for a failed gloo collective ("UNKNOWN: Gloo
    # AllGather failed: ... Connection closed by peer"), a JaxRuntimeError
    # (a RuntimeError) for the coordination service.
    text = str(error).lower()
    return (isinstance(error, (RuntimeError, ValueError))
            and any(sign in text for sign in self._SIGNS))

  def handle(self, error: BaseException):
    from absl import flags  # pylint: disable=g-import-not-at-top
    if 'verbose' in flags.FLAGS and flags.FLAGS['verbose'].value:
      import traceback  # pylint: disable=g-import-not-at-top
      traceback.print_exception(error)
    first = ' '.join(str(error).strip().splitlines()[0].split())[:300]
    print(f'vidjax: error: lost contact with another of the {self._n} '
          'processes (it stopped or died; its own log says why); this is '
          f'process {self._me}. JAX said: {first}', file=sys.stderr,
          flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access


# -------------------------------------------------------------- Barriers.


def _client():
  from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
  state = jax_distributed.global_state
  if state.client is None or state.num_processes < 2:
    return None, 0, 1
  return state.client, state.process_id, state.num_processes


def barrier(name: str, what: str, timeout_s: float | None = None):
  """Waits until every process calls barrier(name), saying who is missing.

  `what` completes "waiting for process 1 of 2 to ...". A no-op with one
  process. Every process must call the same barriers in the same order.
  """
  client, me, n = _client()
  if client is None:
    return
  timeout_s = _timeout_s if timeout_s is None else timeout_s
  use = _barrier_uses.get(name, 0)
  _barrier_uses[name] = use + 1
  base = f'vidjax/barrier/{name.replace("/", "_")}.{use}'
  gave_up = f'{base}/gave_up'
  client.key_value_set(f'{base}/arrived/{me}', '1')
  progress = _Progress(me, n, what, timeout_s)
  while True:
    quitter = _try_get(client, gave_up)
    if quitter is not None:
      _give_up()
      raise VidjaxError(
          f'arrived too late to {what}: process {quitter} of {n} gave up '
          f'waiting (its {_FLAG}); this is process {me}')
    arrived = {int(key.rsplit('/', 1)[1])
               for key, _ in client.key_value_dir_get(f'{base}/arrived/')}
    missing = [i for i in range(n) if i not in arrived]
    if not missing:
      return
    if time.monotonic() > progress.deadline:
      try:
        client.key_value_set(gave_up, str(me))
      except Exception:  # pylint: disable=broad-except
        pass  # Another process gave up first; its mark stands.
      _give_up()
      raise _missing_error(missing, n, what, timeout_s, me)
    progress(missing)
    time.sleep(_POLL_S)


def _give_up():
  global _gave_up
  _gave_up = True


def _try_get(client, key: str) -> str | None:
  try:
    return client.key_value_try_get(key)
  except Exception:  # pylint: disable=broad-except
    return None  # NOT_FOUND: JAX raises its runtime error.


def meet_before_first_call(step: Callable, what: str) -> Callable:
  """`step` (a jitted function), whose first call compiles, then waits at a
  barrier for every process, then runs: its collectives then start together
  however long each host's compile (or restore, or input) took.
  """
  done = False

  def first_call_meets(*args):
    nonlocal done
    if not done:
      done = True
      if _client()[0] is not None:
        step.lower(*args).compile()  # Cached: the call below reuses it.
        barrier(what, what)
    return step(*args)

  return first_call_meets
