"""`python -m roost ...` is `roost ...` (what `roost train --nproc` hands to torchrun)."""

from roost.cli import main

main()
