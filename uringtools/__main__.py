try:
    from .cli import main
    from .cli.common import die_of_signal, signal
except KeyboardInterrupt:   # Ctrl-C while importing: die of it, quietly
    import os
    import signal as _signal_module
    _signal_module.signal(_signal_module.SIGINT, _signal_module.SIG_DFL)
    os.kill(os.getpid(), _signal_module.SIGINT)
    raise

try:
    main(prog_name="uringtools")
except KeyboardInterrupt:   # before a command's run_main took over
    die_of_signal(signal.SIGINT)
