from edgeward.cli import main

main()
