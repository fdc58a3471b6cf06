from p_tasks.main import main

main()
