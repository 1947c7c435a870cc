from vqswitch.eval.identity import *  # noqa: F401,F403  moved to vqswitch.eval.identity
