from textweaver.cli import main

main()
