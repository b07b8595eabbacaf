"""`python -m featkit ...`: the same as the `featkit` command."""

from featkit.cli import main

if __name__ == "__main__":
    main()
