from scpermut.cli import main

main()
