from textweaver.app.cli import main

main()
