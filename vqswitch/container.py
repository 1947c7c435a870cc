from vqswitch.codec.container import *  # noqa: F401,F403  moved to vqswitch.codec.container
