from vqswitch.eval import *  # noqa: F401,F403  moved to vqswitch.eval
