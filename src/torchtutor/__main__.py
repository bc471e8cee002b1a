from torchtutor.cli import main

raise SystemExit(main())
