"""regentctl: manage a Regent (or Patroni) cluster from one command line, in the shape patronictl users know."""
