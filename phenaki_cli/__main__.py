from phenaki_cli.cli import main

main()
